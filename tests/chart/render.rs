//! Rendering the chart for tests: through `tests/chart/render.py` (the Helm SDK from PyPI),
//! parsing the YAML stream, and comparing or rewriting checked-in files (`KEYMOUNT_BLESS=1`).
//! Shared by two test binaries, each using part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Kubernetes version the default golden render is made for (shows the ≥ 1.35 fields).
pub(crate) const GOLDEN_KUBE_VERSION: &str = "v1.35.0";
/// Kubernetes version `deploy/` is rendered for: before 1.35, so it applies to any cluster.
pub(crate) const DEPLOY_KUBE_VERSION: &str = "v1.29.0";
/// The test API server's version.
pub(crate) const TEST_SERVER_VERSION: &str = "v1.20.2";

/// The repository root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The chart directory.
pub(crate) fn chart() -> PathBuf {
    root().join("charts/keymount")
}

/// The Python interpreter that has helm_python (scripts/deps.sh installs it).
pub(crate) fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Renders the chart with `values` for `kube_version`, release `keymount` in `namespace`;
/// with `crds`, the chart's CRDs come first. Panics with the SDK's message on failure.
pub(crate) fn render_in(
    values: &serde_json::Value,
    kube_version: &str,
    namespace: &str,
    crds: bool,
) -> String {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/chart/render.py"))
        .arg("render")
        .arg(chart())
        .arg(format!("--values={values}"))
        .arg(format!("--kube-version={kube_version}"))
        .arg(format!("--namespace={namespace}"));
    if crds {
        cmd.arg("--crds");
    }
    let out = cmd
        .output()
        .expect("run tests/chart/render.py (python3 with helm-python-sdk; see scripts/deps.sh)");
    assert!(
        out.status.success(),
        "render with {values} for {kube_version} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 render")
}

/// The error of a render that must fail (bad values), as the Helm SDK words it.
pub(crate) fn render_error(values: &serde_json::Value) -> String {
    let out = Command::new(python())
        .arg(root().join("tests/chart/render.py"))
        .arg("render")
        .arg(chart())
        .arg(format!("--values={values}"))
        .arg("--kube-version=v1.33.0")
        .output()
        .expect("run tests/chart/render.py");
    assert!(!out.status.success(), "values {values} were accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// [`render_in`] into `kube-system`, without CRDs.
pub(crate) fn render(values: &serde_json::Value, kube_version: &str) -> String {
    render_in(values, kube_version, "kube-system", false)
}

/// The objects of a YAML stream.
pub(crate) fn objects(yaml: &str) -> Vec<serde_json::Value> {
    yaml.split("\n---")
        .filter_map(|doc| {
            let value: serde_json::Value =
                serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("YAML: {e}\n{doc}"));
            (!value.is_null()).then_some(value)
        })
        .collect()
}

/// The objects of `kind` in `objs`.
pub(crate) fn of_kind<'a>(objs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind`.
pub(crate) fn one<'a>(objs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    let found = of_kind(objs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// True when checked-in files should be rewritten instead of compared.
pub(crate) fn blessing() -> bool {
    std::env::var_os("KEYMOUNT_BLESS").is_some_and(|v| v == "1")
}

/// Compares `path` (relative to the root) with `expected`, or rewrites it when blessing.
pub(crate) fn check_file(path: &str, expected: &str) {
    let file = root().join(path);
    if blessing() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, expected).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        return;
    }
    let actual = std::fs::read_to_string(&file).unwrap_or_default();
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "{path} is out of date (first difference at line {}): run scripts/gen-deploy \
             (KEYMOUNT_BLESS=1 cargo test --test chart) and review the diff\n  checked in: {:?}\n  expected:   {:?}",
            first + 1,
            actual.lines().nth(first).unwrap_or("<end>"),
            expected.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

/// Writes `text` to a file in `dir` and returns its path (for command-line tools).
pub(crate) fn write_temp(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Value sets every test renders: the defaults and the ones that change the objects' shape.
pub(crate) fn value_sets() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("default", serde_json::json!({})),
        (
            "rotation",
            serde_json::json!({
                "enableSecretRotation": true,
                "rotationPollInterval": "30s",
                "apiCacheTTL": "10s",
                "logFormatJSON": true,
                "tokenRequests": [{"audience": "api://custom", "expirationSeconds": 3600}, {"audience": "vault"}],
            }),
        ),
        ("sync", serde_json::json!({"syncSecret": {"enabled": true}})),
        (
            "no-builtins",
            serde_json::json!({"builtinProviders": {"vault": {"enabled": false}, "aws": {"enabled": false}}}),
        ),
        (
            "extras",
            serde_json::json!({
                "fullnameOverride": "secrets",
                "metrics": {"serviceMonitor": {"enabled": true}},
                "podDisruptionBudget": {"enabled": true},
                "imagePullSecrets": [{"name": "regcred"}],
                "builtinProviders": {"vault": {"address": "https://vault.example:8200"}},
                "allowedFileDirs": ["/etc/keymount/vault-ca", "/etc/keymount/mtls"],
                "allowedStoreAddresses": ["public", "10.0.0.0/8", "unix:///var/run/vault/agent.sock"],
                "allowVolumeAttributeOverrides": ["roleName"],
                "fsGroupPolicy": "",
                "fsGroupFromPod": true,
                "linux": {
                    "kubeletRootDir": "/var/snap/microk8s/common/var/lib/kubelet",
                    "additionalProvidersDirs": [],
                    "priorityClassName": "system-node-critical",
                    "image": {"digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
                },
            }),
        ),
        (
            "sidecars",
            serde_json::json!({
                "linux": {
                    "kubeletRootDir": "/data/kubelet",
                    "registrar": {"enabled": true},
                    "livenessProbe": {"sidecar": true},
                },
            }),
        ),
        (
            "controller",
            serde_json::json!({
                "controller": {
                    "enabled": true,
                    "replicas": 2,
                    "tokenRequestAudience": ["api://plugin"],
                },
                "hmacKey": {"existingSecret": "keymount-hmac"},
                "builtinProviders": {"vault": {"address": "https://vault.example:8200"}},
                "allowedStoreAddresses": ["public"],
                "logFormatJSON": true,
            }),
        ),
        // Last, so that the sets above keep their indices.
        (
            "restart-on-change",
            serde_json::json!({
                "restartOnChange": {"enabled": true, "minInterval": "5m"},
                "controller": {"enabled": true},
            }),
        ),
    ]
}

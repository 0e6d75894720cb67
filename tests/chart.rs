//! The Helm chart, `deploy/` and the CRDs, offline: rendered with the Helm SDK for the default
//! values and several other sets, validated strictly against the Kubernetes 1.29 and 1.33
//! schemas, linted, and compared with the checked-in files (`tests/chart_objects.rs` checks the
//! objects field by field). `KEYMOUNT_BLESS=1` (scripts/gen-deploy) rewrites the files.

#[path = "chart/render.rs"]
mod render;

use std::process::Command;

use render::{DEPLOY_KUBE_VERSION, GOLDEN_KUBE_VERSION, check_file, objects, root, value_sets};
use serde_json::json;

const DEPLOY_HEADER: &str = "# keymount for `kubectl apply -f deploy/`: the chart (charts/keymount) rendered with its default\n\
# values for release `keymount` in namespace kube-system. Made by scripts/gen-deploy; do not edit.\n";

#[test]
fn keymount_crd_prints_the_checked_in_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_keymount"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    check_file(
        "charts/keymount/crds/secrets-store.csi.x-k8s.io.yaml",
        &yaml,
    );
    check_file("deploy/crds.yaml", &yaml);
    let crds = objects(&yaml);
    let names: Vec<_> = crds
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "secretproviderclasses.secrets-store.csi.x-k8s.io",
            "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"
        ]
    );
}

#[test]
fn keymount_crd_prints_the_checked_in_secret_sync_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_keymount"))
        .args(["crd", "--api", "secret-sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    check_file("charts/keymount/crds/secret-sync.x-k8s.io.yaml", &yaml);
    check_file("deploy/crds-secret-sync.yaml", &yaml);
    let crd = &objects(&yaml)[0];
    assert_eq!(crd["metadata"]["name"], "secretsyncs.secret-sync.x-k8s.io");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(
        version["subresources"]["status"].is_object(),
        "status subresource"
    );
}

#[test]
fn default_render_matches_the_golden_file_and_deploy() {
    let golden = render::render(&json!({}), GOLDEN_KUBE_VERSION);
    check_file("tests/golden/chart-default.yaml", &golden);
    let deploy = format!(
        "{DEPLOY_HEADER}{}",
        render::render(&json!({}), DEPLOY_KUBE_VERSION)
    );
    check_file("deploy/keymount.yaml", &deploy);
}

#[test]
fn every_render_validates_strictly_against_kubernetes_1_29_and_1_33() {
    let tmp = tempfile::tempdir().unwrap();
    // Schema version -> files: a render made for a version is checked against that version's
    // schemas (a 1.35 render has fields 1.29 does not know, as it should); deploy/ and the
    // 1.29 renders also against 1.33.
    let mut by_schema: Vec<(&str, Vec<std::path::PathBuf>)> = vec![
        (
            "1.29.0",
            vec![
                root().join("deploy/keymount.yaml"),
                root().join("deploy/crds.yaml"),
            ],
        ),
        (
            "1.33.0",
            vec![
                root().join("deploy/keymount.yaml"),
                root().join("deploy/crds.yaml"),
            ],
        ),
        ("1.35.0", vec![]),
    ];
    for (name, values) in value_sets() {
        for (version, schemas) in [
            ("v1.29.0", &[0, 1][..]),
            ("v1.33.0", &[1][..]),
            ("v1.35.0", &[2][..]),
        ] {
            let yaml = render::render_in(&values, version, "kube-system", true);
            let file = render::write_temp(tmp.path(), &format!("{name}-{version}.yaml"), &yaml);
            for &i in schemas {
                by_schema[i].1.push(file.clone());
            }
        }
    }
    for (kube, files) in &by_schema {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "-k", kube])
            .args(files)
            .output()
            .expect(
                "run kubernetes-validate (pip install kubernetes-validate; see scripts/deps.sh)",
            );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {kube}:\n{text}"
        );
        // Only the prometheus-operator ServiceMonitor has no schema in Kubernetes itself.
        for line in text
            .lines()
            .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
        {
            assert!(
                line.contains("kind ServiceMonitor"),
                "kubernetes-validate -k {kube}: {line}"
            );
        }
        let expected: usize = files
            .iter()
            .map(|f| {
                objects(&std::fs::read_to_string(f).unwrap())
                    .iter()
                    .filter(|o| o["kind"] != "ServiceMonitor")
                    .count()
            })
            .sum();
        let passed = text
            .lines()
            .filter(|l| l.starts_with("INFO") && l.contains(" passed "))
            .count();
        assert_eq!(
            passed, expected,
            "objects validated against {kube}:\n{text}"
        );
    }
}

#[test]
fn helm_lint_strict_passes_for_every_value_set() {
    for (name, values) in value_sets() {
        let out = Command::new(render::python())
            .arg(root().join("tests/chart/render.py"))
            .arg("lint")
            .arg(render::chart())
            .arg(format!("--values={values}"))
            .arg("--kube-version=v1.33.0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm lint --strict ({name}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    for (values, names) in [
        (
            json!({"tokenRequests": [{"audiance": "vault"}]}),
            "/tokenRequests/0",
        ),
        (json!({"tmpfsSize": "16MB"}), "/tmpfsSize"),
        (
            json!({"builtinProviders": {"gcp": {"enabled": true}}}),
            "'gcp' not allowed",
        ),
        (
            json!({"enableSecretRotation": "yes"}),
            "/enableSecretRotation",
        ),
        (
            json!({"rotationPollInterval": "2 minutes"}),
            "/rotationPollInterval",
        ),
        (json!({"apiCacheTTL": "soon"}), "/apiCacheTTL"),
        (
            json!({"linux": {"kubeletRootDir": "var/lib/kubelet"}}),
            "/linux/kubeletRootDir",
        ),
        (json!({"fsGroupPolicy": "file"}), "/fsGroupPolicy"),
        (json!({"fsGroupFromPod": "true"}), "/fsGroupFromPod"),
        (
            json!({"restartOnChange": {"minInterval": "1 minute"}}),
            "/restartOnChange/minInterval",
        ),
        (
            json!({"restartOnChange": {"enable": true}}),
            "'enable' not allowed",
        ),
        (
            json!({"controller": {"enabled": true, "replcas": 2}}),
            "'replcas' not allowed",
        ),
        (
            json!({"controller": {"tokenRequestAudience": ["a,b"]}}),
            "/controller/tokenRequestAudience/0",
        ),
        (
            json!({"controller": {"leaderElection": {"leaseDuration": "15"}}}),
            "/controller/leaderElection/leaseDuration",
        ),
        (
            json!({"controller": {"enabled": true, "replicas": 2, "leaderElection": {"enabled": false}}}),
            "controller.replicas > 1 needs controller.leaderElection.enabled",
        ),
    ] {
        let error = render::render_error(&values);
        assert!(error.contains(names), "{values}: {error}");
    }
    let error = render::render_error(&json!({"serviceAccount": {"create": false}}));
    assert!(error.contains("serviceAccount.name is required"), "{error}");
}

#[test]
fn values_and_static_manifests_pass_yamllint() {
    let out = Command::new("yamllint")
        .arg("--strict")
        .arg("-c")
        .arg(root().join("tests/chart/yamllint.yaml"))
        .arg(root().join("charts/keymount/values.yaml"))
        .arg(root().join("charts/keymount/Chart.yaml"))
        .arg(root().join("deploy"))
        .arg(root().join("tests/fixtures/secretproviderclasses"))
        .output()
        .expect("run yamllint (apt-get install yamllint; see scripts/deps.sh)");
    assert!(
        out.status.success(),
        "yamllint:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

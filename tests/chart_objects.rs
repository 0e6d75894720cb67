//! The rendered chart's objects, field by field: the RBAC rules are exactly the intended list,
//! the CSIDriver follows the values and the cluster version, and the DaemonSet passes only
//! flags `keymount node` knows and mounts the kubelet's directories as kubelet needs.

#[path = "chart/render.rs"]
mod render;

use std::collections::BTreeSet;
use std::process::Command;

use render::{DEPLOY_KUBE_VERSION, objects, of_kind, one, value_sets};
use serde_json::{Value, json};

/// (apiGroup, resource, verbs) of every rule of the ClusterRole named `name`.
fn rules(objs: &[Value], name: &str) -> Vec<(String, String, Vec<String>)> {
    let role = of_kind(objs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ClusterRole {name}"));
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                let verbs = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                out.push((
                    group.as_str().unwrap().to_owned(),
                    resource.as_str().unwrap().to_owned(),
                    verbs,
                ));
            }
        }
    }
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> (String, String, Vec<String>) {
    (
        group.into(),
        resource.into(),
        verbs.iter().map(|v| v.to_string()).collect(),
    )
}

const SPC_GROUP: &str = "secrets-store.csi.x-k8s.io";

#[test]
fn rbac_rules_are_exactly_the_intended_ones() {
    let node_rules = |aws: bool| {
        let mut r = vec![
            rule(
                SPC_GROUP,
                "secretproviderclasses",
                &["get", "list", "watch"],
            ),
            rule(
                SPC_GROUP,
                "secretproviderclasspodstatuses",
                &["create", "patch"],
            ),
            rule("", "events", &["create"]),
        ];
        if aws {
            r.push(rule("", "serviceaccounts", &["get", "list", "watch"]));
            r.push(rule("", "nodes", &["get", "list", "watch"]));
        }
        r
    };
    let default = objects(&render::render(&json!({}), DEPLOY_KUBE_VERSION));
    assert_eq!(rules(&default, "keymount"), node_rules(true));
    assert_eq!(
        of_kind(&default, "ClusterRole").len(),
        1,
        "no Secret access without syncSecret"
    );

    let no_aws = objects(&render::render(
        &json!({"builtinProviders": {"aws": {"enabled": false}}}),
        DEPLOY_KUBE_VERSION,
    ));
    assert_eq!(rules(&no_aws, "keymount"), node_rules(false));

    let sync = objects(&render::render(
        &json!({"syncSecret": {"enabled": true}}),
        DEPLOY_KUBE_VERSION,
    ));
    assert_eq!(rules(&sync, "keymount"), node_rules(true));
    assert_eq!(
        rules(&sync, "keymount-sync"),
        vec![
            rule("", "secrets", &["get", "create", "patch"]),
            rule("", "pods", &["get"]),
        ]
    );
    for (name, objs) in [("keymount", &sync), ("keymount-sync", &sync)] {
        let binding = of_kind(objs, "ClusterRoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["name"] == name)
            .unwrap();
        assert_eq!(binding["roleRef"]["name"], name);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "keymount", "namespace": "kube-system"}])
        );
    }

    let none = objects(&render::render(
        &json!({"rbac": {"install": false}}),
        DEPLOY_KUBE_VERSION,
    ));
    assert!(
        of_kind(&none, "ClusterRole").is_empty() && of_kind(&none, "ClusterRoleBinding").is_empty()
    );
}

fn audiences(csidriver: &Value) -> Vec<&str> {
    csidriver["spec"]["tokenRequests"]
        .as_array()
        .map(|a| a.iter().map(|t| t["audience"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn the_csidriver_follows_the_values_and_the_cluster_version() {
    let default = objects(&render::render(&json!({}), "v1.33.0"));
    let driver = one(&default, "CSIDriver");
    assert_eq!(driver["metadata"]["name"], "secrets-store.csi.k8s.io");
    let spec = &driver["spec"];
    assert_eq!(spec["podInfoOnMount"], true);
    assert_eq!(spec["attachRequired"], false);
    assert_eq!(spec["volumeLifecycleModes"], json!(["Ephemeral"]));
    assert_eq!(
        spec["requiresRepublish"], false,
        "tied to enableSecretRotation (off by default, as upstream)"
    );
    assert_eq!(
        audiences(driver),
        ["sts.amazonaws.com", "pods.eks.amazonaws.com", "vault"]
    );
    assert!(
        spec.get("serviceAccountTokenInSecrets").is_none(),
        "only from 1.35 on"
    );

    let new = objects(&render::render(&json!({}), "v1.35.0"));
    assert_eq!(
        one(&new, "CSIDriver")["spec"]["serviceAccountTokenInSecrets"],
        true
    );

    let rotation = objects(&render::render(&value_sets()[1].1, "v1.33.0"));
    let driver = one(&rotation, "CSIDriver");
    assert_eq!(driver["spec"]["requiresRepublish"], true);
    assert_eq!(
        audiences(driver),
        [
            "api://custom",
            "vault",
            "sts.amazonaws.com",
            "pods.eks.amazonaws.com"
        ]
    );
    assert_eq!(
        driver["spec"]["tokenRequests"][0]["expirationSeconds"],
        3600
    );

    let vault_only = objects(&render::render(
        &json!({"builtinProviders": {"aws": {"enabled": false}}}),
        "v1.33.0",
    ));
    assert_eq!(audiences(one(&vault_only, "CSIDriver")), ["vault"]);

    for version in ["v1.33.0", "v1.35.0"] {
        let none = objects(&render::render(&value_sets()[3].1, version));
        let spec = &one(&none, "CSIDriver")["spec"];
        assert!(
            spec.get("tokenRequests").is_none()
                && spec.get("serviceAccountTokenInSecrets").is_none(),
            "{spec}"
        );
    }
}

/// The keymount container of the rendered DaemonSet.
fn keymount_container(objs: &[Value]) -> &Value {
    let ds = one(objs, "DaemonSet");
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keymount")
        .unwrap()
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn the_daemonset_passes_only_flags_keymount_node_knows() {
    let help = Command::new(env!("CARGO_BIN_EXE_keymount"))
        .args(["node", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let known: BTreeSet<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches([',', '=']))
        .collect();
    let mut pending = BTreeSet::new();
    for (name, values) in value_sets() {
        let objs = objects(&render::render(&values, "v1.33.0"));
        let container = keymount_container(&objs);
        let args = args(container);
        assert_eq!(args[0], "node", "{name}");
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap();
            // Served by the Secret sync controller, which is built on its own branch.
            if flag == "--enable-secret-sync" && !known.contains(flag) {
                pending.insert(flag.to_owned());
                continue;
            }
            assert!(
                known.contains(flag),
                "{name}: `keymount node --help` has no {flag}"
            );
        }
        assert_eq!(container["env"][0]["name"], "NODE_NAME");
        assert_eq!(
            container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName"
        );
        assert!(args.contains(&"--nodeid=$(NODE_NAME)"));
    }
    eprintln!("flags not in this build's `keymount node --help` yet: {pending:?}");

    let default = objects(&render::render(&json!({}), "v1.33.0"));
    let a = args(keymount_container(&default));
    assert!(a.contains(&"--builtin-providers=aws,vault"), "{a:?}");
    assert!(
        !a.iter()
            .any(|f| f.starts_with("--enable-secret-rotation") || f.starts_with("--log-format"))
    );
    let rotation = objects(&render::render(&value_sets()[1].1, "v1.33.0"));
    let a = args(keymount_container(&rotation));
    for flag in [
        "--enable-secret-rotation",
        "--rotation-poll-interval=30s",
        "--log-format=json",
    ] {
        assert!(a.contains(&flag), "{flag} missing from {a:?}");
    }
    let none = objects(&render::render(&value_sets()[3].1, "v1.33.0"));
    assert!(args(keymount_container(&none)).contains(&"--builtin-providers="));
    let d = args(keymount_container(&default));
    assert!(
        !d.iter()
            .any(|f| f.starts_with("--allowed-") || f.starts_with("--allow-")),
        "no file dirs, default addresses, no overrides by default: {d:?}"
    );
    let extras = objects(&render::render(&value_sets()[4].1, "v1.33.0"));
    let a = args(keymount_container(&extras));
    for flag in [
        "--allowed-file-dirs=/etc/keymount/vault-ca,/etc/keymount/mtls",
        "--allowed-store-addresses=public,10.0.0.0/8,unix:///var/run/vault/agent.sock",
        "--allow-volume-attribute-overrides=roleName",
    ] {
        assert!(a.contains(&flag), "{flag} missing from {a:?}");
    }
}

#[test]
fn the_daemonset_mounts_the_kubelet_dirs_with_the_right_propagation() {
    for (name, values) in value_sets() {
        let objs = objects(&render::render(&values, "v1.33.0"));
        let root_dir = values["linux"]["kubeletRootDir"]
            .as_str()
            .unwrap_or("/var/lib/kubelet");
        let pod = &one(&objs, "DaemonSet")["spec"]["template"]["spec"];
        let host_path = |volume: &str| {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume)
                .unwrap()["hostPath"]["path"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            host_path("mountpoint-dir"),
            format!("{root_dir}/pods"),
            "{name}"
        );
        assert_eq!(
            host_path("registration-dir"),
            format!("{root_dir}/plugins_registry/"),
            "{name}"
        );
        assert_eq!(
            host_path("plugin-dir"),
            format!("{root_dir}/plugins/csi-secrets-store/"),
            "{name}"
        );
        let mounts = keymount_container(&objs)["volumeMounts"]
            .as_array()
            .unwrap();
        let pods = mounts
            .iter()
            .find(|m| m["name"] == "mountpoint-dir")
            .unwrap();
        assert_eq!(pods["mountPropagation"], "Bidirectional", "{name}");
        assert_eq!(
            pods["mountPath"],
            format!("{root_dir}/pods"),
            "{name}: same path inside as outside"
        );
        // keymount accepts targets only below the same root kubelet uses.
        let args = keymount_container(&objs)["args"].as_array().unwrap();
        assert!(
            args.iter()
                .any(|a| a == &format!("--kubelet-root-dir={root_dir}")),
            "{name}: --kubelet-root-dir={root_dir} not passed: {args:?}"
        );
        for m in mounts.iter().filter(|m| m["name"] != "mountpoint-dir") {
            assert!(
                m.get("mountPropagation").is_none(),
                "{name}: only the pods dir needs propagation: {m}"
            );
        }
        let probes = keymount_container(&objs);
        assert_eq!(probes["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(probes["readinessProbe"]["httpGet"]["path"], "/readyz");
    }
}

/// By default one container: keymount registers itself (the registration directory mounted
/// at the host's path, `--register-with-kubelet` with the CSI socket's host path) and kubelet's
/// liveness probe asks keymount's own `/healthz`. With `linux.registrar.enabled` and
/// `linux.livenessProbe.sidecar`, upstream's three containers, and keymount does not register.
#[test]
fn one_container_by_default_and_upstreams_sidecars_on_request() {
    for (name, values) in value_sets() {
        let objs = objects(&render::render(&values, "v1.33.0"));
        let root_dir = values["linux"]["kubeletRootDir"]
            .as_str()
            .unwrap_or("/var/lib/kubelet");
        let registrar = values["linux"]["registrar"]["enabled"] == true;
        let sidecar = values["linux"]["livenessProbe"]["sidecar"] == true;
        let pod = &one(&objs, "DaemonSet")["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        let names: Vec<&str> = containers
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let image = |n: &str| {
            containers.iter().find(|c| c["name"] == n).unwrap()["image"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let keymount = keymount_container(&objs);
        let keymount_args = args(keymount);
        let socket_on_host = format!("{root_dir}/plugins/csi-secrets-store/csi.sock");
        let registration_mount = keymount["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "registration-dir");
        if registrar {
            assert!(
                names.contains(&"node-driver-registrar"),
                "{name}: {names:?}"
            );
            assert!(
                image("node-driver-registrar")
                    .starts_with("registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.")
            );
            let registrar_args = containers[0]["args"].to_string();
            assert!(
                registrar_args.contains(&format!("--kubelet-registration-path={socket_on_host}")),
                "{name}: {registrar_args}"
            );
            assert!(
                !keymount_args.contains(&"--register-with-kubelet"),
                "{name}: two registrations of one driver"
            );
            assert!(registration_mount.is_none(), "{name}");
        } else {
            assert!(
                !names.contains(&"node-driver-registrar"),
                "{name}: {names:?}"
            );
            assert!(keymount_args.contains(&"--register-with-kubelet"), "{name}");
            assert!(
                keymount_args
                    .contains(&format!("--kubelet-registration-path={socket_on_host}").as_str()),
                "{name}: {keymount_args:?}"
            );
            assert_eq!(
                registration_mount.unwrap()["mountPath"],
                format!("{root_dir}/plugins_registry"),
                "{name}: keymount makes <root>/plugins_registry/<driver>-reg.sock, the host's path"
            );
        }
        let ports: Vec<&str> = keymount["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        if sidecar {
            assert!(names.contains(&"liveness-probe"), "{name}: {names:?}");
            assert!(
                image("liveness-probe")
                    .starts_with("registry.k8s.io/sig-storage/livenessprobe:v2.")
            );
            assert_eq!(
                keymount["livenessProbe"]["httpGet"]["port"], "healthz",
                "{name}"
            );
            assert_eq!(ports, ["metrics", "healthz"], "{name}");
        } else {
            assert!(!names.contains(&"liveness-probe"), "{name}: {names:?}");
            assert_eq!(
                keymount["livenessProbe"]["httpGet"]["port"], "metrics",
                "{name}"
            );
            assert_eq!(ports, ["metrics"], "{name}: nothing listens on 9808");
        }
        let expected = 1 + usize::from(registrar) + usize::from(sidecar);
        assert_eq!(names.len(), expected, "{name}: {names:?}");
        if name == "default" {
            assert_eq!(names, ["keymount"], "one container per node by default");
        }
    }
}

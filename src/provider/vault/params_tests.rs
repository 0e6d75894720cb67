//! Unit tests of the `vault` class parameters.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    vault: VaultArgs,
}

fn defaults(args: &[&str]) -> VaultArgs {
    let mut argv = vec!["test"];
    argv.extend_from_slice(args);
    Flags::try_parse_from(argv).unwrap().vault
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const OBJECTS: &str = "- objectName: db\n  secretPath: secret/data/db\n  secretKey: password\n  filePermission: 0600\n- objectName: cert\n  secretPath: pki/issue/web\n  method: POST\n  secretArgs: {common_name: a.example.com, ttl: 1h}\n  filePermission: 420\n";

#[test]
fn class_parameters_override_node_defaults() {
    let d = defaults(&["--vault-addr=http://node:8200", "--vault-namespace=team"]);
    let p = MountParameters::parse(
        &attrs(&[
            ("roleName", "app"),
            ("vaultAddress", "https://vault.example:8200/"),
            ("vaultSkipTLSVerify", "true"),
            ("objects", OBJECTS),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            ("csi.storage.k8s.io/serviceAccount.name", "web"),
        ]),
        &d,
        &Access::default(),
    )
    .unwrap();
    assert_eq!(p.connection.address, "https://vault.example:8200");
    assert_eq!(p.connection.namespace.as_deref(), Some("team"));
    assert!(p.connection.tls.skip_verify);
    assert_eq!(p.auth_mount, "kubernetes");
    assert_eq!(p.audience, "vault");
    assert_eq!(p.service_account.as_deref(), Some("shop/web"));
    assert_eq!(
        p.objects[0].file_permission.as_ref().unwrap().mode(),
        Some(0o600)
    );
    assert_eq!(
        p.objects[1].file_permission.as_ref().unwrap().mode(),
        Some(0o644)
    );
    assert_eq!(p.objects[1].secret_args.as_ref().unwrap()["ttl"], "1h");
}

#[test]
fn bad_parameters_are_named() {
    let d = defaults(&["--vault-addr=http://node:8200"]);
    let err = |pairs: &[(&str, &str)]| {
        MountParameters::parse(&attrs(pairs), &d, &Access::default())
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[("objects", OBJECTS)]).contains("roleName"));
    let e = err(&[
        ("roleName", "r"),
        ("objects", OBJECTS),
        ("vaultSkipTLSVerify", "yes"),
    ]);
    assert!(e.contains("vaultSkipTLSVerify"), "{e}");
    let e = err(&[
        ("roleName", "r"),
        ("objects", OBJECTS),
        ("vaultAuthMountPath", "jwt"),
        ("vaultKubernetesMountPath", "k8s"),
    ]);
    assert!(e.contains("vaultAuthMountPath"), "{e}");
    let dup = "- {objectName: a, secretPath: x}\n- {objectName: a, secretPath: y}";
    let e = err(&[("roleName", "r"), ("objects", dup)]);
    assert!(
        e.contains("objects[1].objectName") && e.contains("unique"),
        "{e}"
    );
    let enc = "- {objectName: a, secretPath: x, encoding: rot13}";
    assert!(err(&[("roleName", "r"), ("objects", enc)]).contains("objects[0].encoding"));
    assert!(err(&[("roleName", "r")]).contains("objects"));
    let no_addr = MountParameters::parse(
        &attrs(&[("roleName", "r"), ("objects", OBJECTS)]),
        &defaults(&[]),
        &Access::default(),
    );
    if std::env::var_os("VAULT_ADDR").is_none() {
        assert!(no_addr.unwrap_err().to_string().contains("vaultAddress"));
    }
}

#[test]
fn file_permissions_read_like_go() {
    let m = |t: &str| FilePermission::Text(t.into()).mode();
    assert_eq!(m("0644"), Some(0o644));
    assert_eq!(m("0o400"), Some(0o400));
    assert_eq!(m("420"), Some(0o644));
    assert_eq!(m("0999"), None);
    assert_eq!(FilePermission::Number(0o7777).mode(), None);
}

#[test]
fn the_admins_client_certificate_goes_only_to_the_admins_address() {
    let d = defaults(&[
        "--vault-addr=https://vault.internal:8200",
        "--vault-tls-client-cert=/etc/keymount/client.crt",
        "--vault-tls-client-key=/etc/keymount/client.key",
    ]);
    let base = [
        ("roleName", "app"),
        ("objects", OBJECTS),
        ("csi.storage.k8s.io/pod.namespace", "shop"),
    ];
    let admins = MountParameters::parse(&attrs(&base), &d, &Access::default()).unwrap();
    assert!(admins.connection.tls.client_cert.is_some());
    assert!(admins.connection.tls.client_key.is_some());

    let mut own = base.to_vec();
    own.push(("vaultAddress", "https://vault.example:8200"));
    let class = MountParameters::parse(&attrs(&own), &d, &Access::default()).unwrap();
    assert!(
        class.connection.tls.client_cert.is_none() && class.connection.tls.client_key.is_none(),
        "a class-named store never sees the node's client identity"
    );
}

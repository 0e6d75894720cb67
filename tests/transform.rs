//! extract and templates end to end: the real `keymount node` against the test API server
//! (classes and synced Secrets through it) and OpenBao, publishes made as kubelet makes them;
//! files in the application's format on the tmpfs, in the synced Secrets, swapped whole on a
//! rotation; bad settings refused by name with the old content kept.

mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use sync_support::Bed;

/// The whole KV data of `secret/data/db` as one JSON file `db` (no secretKey).
const OBJECTS: &str = "- {objectName: db, secretPath: secret/data/db}";

const TEMPLATES: &str = r#"
- name: .pgpass
  mode: "0600"
  template: "db.shop:{{ .port }}:shop:{{ .username }}:{{ .password }}"
- name: dsn
  template: postgres://{{ .username }}:{{ .password }}@db.shop:{{ .port }}/shop
- name: .dockerconfigjson
  template: '{"auths":{"registry.shop":{"auth":"{{ print .username ":" .password | b64enc }}"}}}'
"#;

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn data(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn vault_extract_and_templates_make_files_in_the_apps_format_and_synced_secrets() {
    let bed = Bed::new("tpl").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "shop", "password": "pw-tpl-1", "port": 5432}),
        )
        .await;
    let secret_objects = json!([
        {"secretName": "db-env", "type": "Opaque", "data": [
            {"objectName": "username", "key": "username"},
            {"objectName": "password", "key": "password"},
            {"objectName": "port", "key": "port"}]},
        {"secretName": "registry", "type": "kubernetes.io/dockerconfigjson",
         "data": [{"objectName": ".dockerconfigjson", "key": ".dockerconfigjson"}]},
    ]);
    bed.apply_class(
        "app",
        &[
            ("keymount.io/extract", "db"),
            ("keymount.io/templates", TEMPLATES),
        ],
        OBJECTS,
        secret_objects,
    )
    .await;
    let node = bed.restricted_node(&["--enable-secret-sync"]).await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .expect("publish");

    let target = bed.target(&pod, "secrets");
    assert!(
        !target.join("db").exists(),
        "the extracted object is replaced by its keys"
    );
    assert_eq!(read(&target.join("username")), "shop");
    assert_eq!(read(&target.join("port")), "5432");
    assert_eq!(
        read(&target.join(".pgpass")),
        "db.shop:5432:shop:shop:pw-tpl-1"
    );
    let mode = |name: &str| {
        std::fs::metadata(target.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(".pgpass"), 0o600);
    assert_eq!(mode("dsn"), 0o644);
    assert_eq!(
        read(&target.join("dsn")),
        "postgres://shop:pw-tpl-1@db.shop:5432/shop"
    );

    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let env = secrets.get("db-env").await.unwrap();
    assert_eq!(
        (
            data(&env, "username"),
            data(&env, "password"),
            data(&env, "port")
        ),
        ("shop".into(), "pw-tpl-1".into(), "5432".into()),
        "every extracted key reaches the Secret an envFrom reads"
    );
    // The API server checks a kubernetes.io/dockerconfigjson Secret's content: it took it.
    let registry = secrets.get("registry").await.unwrap();
    assert_eq!(
        registry.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let auth: serde_json::Value =
        serde_json::from_str(&data(&registry, ".dockerconfigjson")).unwrap();
    assert_eq!(
        auth["auths"]["registry.shop"]["auth"],
        "c2hvcDpwdy10cGwtMQ=="
    );

    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains("pw-tpl-1"), "a value in the node's log");
}

#[tokio::test]
async fn a_rotation_swaps_templated_files_whole_while_a_reader_reads_them() {
    let bed = Bed::new("tpl-rot").await;
    let value =
        |n: usize| json!({"username": "shop", "password": format!("pw-rot-{n:03}"), "port": 5432});
    bed.bao.kv2_put("secret", "db", value(0)).await;
    bed.apply_class(
        "app",
        &[
            ("keymount.io/extract", "db"),
            ("keymount.io/templates", TEMPLATES),
        ],
        OBJECTS,
        serde_json::Value::Null,
    )
    .await;
    let node = bed
        .restricted_node(&["--enable-secret-rotation", "--rotation-poll-interval=1s"])
        .await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .expect("publish");
    let dsn = bed.target(&pod, "secrets").join("dsn");

    // A reader that only ever accepts a whole rendering of some version.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dsn) = (stop.clone(), dsn.clone());
        std::thread::spawn(move || {
            let mut reads = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&dsn).expect("dsn is always there");
                let whole = text.starts_with("postgres://shop:pw-rot-")
                    && text.ends_with("@db.shop:5432/shop")
                    && text.len() == "postgres://shop:pw-rot-000@db.shop:5432/shop".len();
                assert!(whole, "a half-rendered file: {} bytes", text.len());
                reads += 1;
            }
            reads
        })
    };
    for n in 1..=5 {
        bed.bao.kv2_put("secret", "db", value(n)).await;
        // The rotation gate's floor: one fetch per volume and second.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
            .await
            .expect("republish");
        assert_eq!(
            read(&dsn),
            format!("postgres://shop:pw-rot-{n:03}@db.shop:5432/shop")
        );
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw only whole files");
    assert!(
        reads > 10,
        "the reader ran during the rotations ({reads} reads)"
    );
}

#[tokio::test]
async fn bad_settings_are_refused_by_class_and_template_and_a_rotation_keeps_the_old_files() {
    let bed = Bed::new("tpl-bad").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "shop", "password": "pw-bad-1"}),
        )
        .await;
    bed.bao
        .kv2_put("secret", "evil", json!({"../up": "x"}))
        .await;
    bed.bao
        .kv2_put("secret", "plain", json!({"text": "not json at all"}))
        .await;
    bed.bao
        .kv2_put("secret", "big", json!({"big": "b".repeat(8 * 1024)}))
        .await;
    // Volumes of 64 KiB: the limit of one template's output is the volume's own.
    let node = bed
        .restricted_node(&[
            "--enable-secret-rotation",
            "--rotation-poll-interval=1s",
            "--tmpfs-size=64Ki",
        ])
        .await;
    let mut csi = node.node_client().await;
    let plain = "- {objectName: text, secretPath: secret/data/plain, secretKey: text}";
    let evil = "- {objectName: evil, secretPath: secret/data/evil}";
    let big = "- {objectName: big, secretPath: secret/data/big, secretKey: big}";
    let ten_times = format!("- {{name: out, template: \"{}\"}}", "{{ .big }}".repeat(10));
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: [Case; 6] = [
        (
            "syntax",
            vec![(
                "keymount.io/templates",
                "- {name: dsn, template: \"{{ .username \"}",
            )],
            OBJECTS,
            "template \"dsn\": line 1 column 1: unclosed",
        ),
        (
            "missing-key",
            vec![
                ("keymount.io/extract", "db"),
                (
                    "keymount.io/templates",
                    "- {name: dsn, template: \"{{ .nope }}\"}",
                ),
            ],
            OBJECTS,
            "no object or key \"nope\"",
        ),
        (
            "not-json",
            vec![("keymount.io/extract", "text")],
            plain,
            "object \"text\" is not a JSON object",
        ),
        (
            "bad-name",
            vec![("keymount.io/extract", "evil")],
            evil,
            "unsafe file set",
        ),
        (
            "duplicate",
            vec![
                ("keymount.io/extract", "db"),
                ("keymount.io/templates", "- {name: username, template: x}"),
            ],
            OBJECTS,
            "two files would be named \"username\"",
        ),
        (
            "too-big",
            vec![("keymount.io/templates", ten_times.as_str())],
            big,
            "output is larger than 65536 bytes",
        ),
    ];
    for (i, (name, annotations, objects, want)) in cases.iter().enumerate() {
        bed.apply_class(name, annotations, objects, serde_json::Value::Null)
            .await;
        let pod = bed.pod(&format!("bad-{i}")).await;
        let status = csi
            .node_publish_volume(bed.publish(&pod, "secrets", name))
            .await
            .expect_err(name);
        let message = status.message();
        assert!(message.contains(want), "{name}: {message}");
        assert!(
            message.contains(&format!("{}/{name}", bed.ns)),
            "{name}: the class is named: {message}"
        );
        assert!(
            !message.contains("pw-bad-1")
                && !message.contains("not json at all")
                && !message.contains("bbbb"),
            "{name}: a value: {message}"
        );
        assert!(
            harness::mounts::mount_entry(&bed.target(&pod, "secrets")).is_none(),
            "{name}: nothing stays mounted"
        );
    }

    // A class whose templates break after the first mount: the rotation fails, the old
    // files stay.
    let good = [
        ("keymount.io/extract", "db"),
        (
            "keymount.io/templates",
            "- {name: dsn, template: \"{{ .password }}\"}",
        ),
    ];
    bed.apply_class("good", &good, OBJECTS, serde_json::Value::Null)
        .await;
    let pod = bed.pod("good-0").await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "good"))
        .await
        .expect("publish");
    let dsn = bed.target(&pod, "secrets").join("dsn");
    assert_eq!(read(&dsn), "pw-bad-1");
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "shop", "password": "pw-bad-2"}),
        )
        .await;
    let broken = [
        ("keymount.io/extract", "db"),
        (
            "keymount.io/templates",
            "- {name: dsn, template: \"{{ .password | nosuch }}\"}",
        ),
    ];
    bed.apply_class("good", &broken, OBJECTS, serde_json::Value::Null)
        .await;
    // Past the class cache (1s in tests) and the rotation floor (1s): the republish fetches.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "good"))
        .await
        .expect("a failed rotation keeps the volume and answers OK");
    let event = bed.wait_event("good-0", "MountRotationFailed").await;
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("template \"dsn\"") && message.contains("nosuch"),
        "{message}"
    );
    assert!(
        !message.contains("pw-bad"),
        "a value in the event: {message}"
    );
    assert_eq!(
        read(&dsn),
        "pw-bad-1",
        "old content kept when the templates fail"
    );
}

//! The aws provider end to end: the real `keymount node` binary in local mode over its CSI
//! socket, real tmpfs mounts, moto behind a counting proxy, IRSA with a real ServiceAccount
//! token from the test API server; and no secret, token or credential in the node's logs.

mod aws_support;
mod harness;
mod support;

use std::os::unix::fs::PermissionsExt as _;

use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_ssm::types::ParameterType;
use aws_support::{AwsProxy, between, ssm, tokens_json};
use harness::mounts::mount_entry;
use harness::node::{
    NodeOptions, NodeProcess, pod_uid, publish_request, unpublish_request, write_class,
};
use keymount::provider::tokens::TOKENS_KEY;
use support::kube::TestKube;
use support::moto::{Moto, REGION};
use tonic::Code;

const ROLE: &str = "arn:aws:iam::123456789012:role/node-e2e";
const OBJECTS: &str = r#"
- objectName: prod/db
  objectType: secretsmanager
  objectAlias: db.json
  filePermission: "0600"
  jmesPath:
    - {path: password, objectAlias: db-password}
- {objectName: prod/keystore, objectType: secretsmanager}
- {objectName: /prod/api-key, objectType: ssmparameter}
"#;

#[tokio::test]
async fn node_publishes_aws_secrets_onto_tmpfs_with_the_pods_token() {
    let kube = TestKube::get();
    let ns = kube.namespace("aws-node").await;
    kube.create_service_account(&ns, "app", &[]).await;
    let token = kube
        .request_token(&ns, "app", &["sts.amazonaws.com"], None)
        .await;

    let moto = Moto::start().await;
    let proxy = AwsProxy::start(moto.endpoint()).await;
    let sm = moto.secretsmanager();
    sm.create_secret()
        .name("prod/db")
        .secret_string(r#"{"user":"app","password":"node-e2e-db-password-77"}"#)
        .send()
        .await
        .unwrap();
    let keystore = vec![0xfe_u8, 0xed, 0xfa, 0xce, 0x00, 0x7f];
    sm.create_secret()
        .name("prod/keystore")
        .secret_binary(Blob::new(keystore.clone()))
        .send()
        .await
        .unwrap();
    ssm(&moto)
        .put_parameter()
        .name("/prod/api-key")
        .value("node-e2e-ssm-api-key-31")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let classes = work.path().join("classes");
    let params = [("region", REGION), ("roleArn", ROLE), ("objects", OBJECTS)];
    write_class(&classes, &ns, "aws-app", "aws", &params);
    let endpoint = proxy.endpoint.clone();
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes),
        args: vec![
            format!("--aws-sts-endpoint={endpoint}"),
            format!("--aws-secretsmanager-endpoint={endpoint}"),
            format!("--aws-ssm-endpoint={endpoint}"),
            "--aws-retry-initial-backoff=10ms".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;

    let target = node.target(&pod_uid(1), "secrets");
    let mut request = publish_request("vol-aws-1", &target, "aws-app", &ns);
    let tokens = tokens_json(&[("sts.amazonaws.com", &token)]);
    request
        .volume_context
        .insert(TOKENS_KEY.into(), tokens.clone());
    client
        .node_publish_volume(request.clone())
        .await
        .expect("publish");
    assert!(
        mount_entry(&target).is_some(),
        "target is a tmpfs mount point"
    );
    let read = |name: &str| std::fs::read(target.join(name)).unwrap();
    let file_mode = |name: &str| {
        std::fs::metadata(target.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(read("db-password"), b"node-e2e-db-password-77");
    assert_eq!(file_mode("db-password"), 0o600);
    assert!(
        String::from_utf8(read("db.json"))
            .unwrap()
            .contains("\"user\":\"app\"")
    );
    assert_eq!(read("prod_keystore"), keystore);
    assert_eq!(file_mode("prod_keystore"), 0o644);
    assert_eq!(read("_prod_api-key"), b"node-e2e-ssm-api-key-31");
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 1);
    assert_eq!(proxy.count("BatchGetSecretValue"), 1);
    assert_eq!(proxy.count("GetParameters"), 1);

    // extract: the JSON secret becomes one file per key (class annotation, local mode too).
    let extract_class = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata:\n  name: aws-extract\n  namespace: {ns}\n  annotations:\n    keymount.io/extract: db.json\n\
         spec:\n  provider: aws\n  parameters:\n    region: {REGION}\n    roleArn: {ROLE:?}\n\
         \x20   objects: \"- {{objectName: prod/db, objectType: secretsmanager, objectAlias: db.json}}\"\n"
    );
    std::fs::write(
        work.path()
            .join("classes")
            .join(format!("{ns}-aws-extract.yaml")),
        extract_class,
    )
    .unwrap();
    let extracted = node.target(&pod_uid(3), "secrets");
    let mut request = publish_request("vol-aws-3", &extracted, "aws-extract", &ns);
    request
        .volume_context
        .insert(TOKENS_KEY.into(), tokens.clone());
    client
        .node_publish_volume(request.clone())
        .await
        .expect("publish with extract");
    assert_eq!(std::fs::read(extracted.join("user")).unwrap(), b"app");
    assert_eq!(
        std::fs::read(extracted.join("password")).unwrap(),
        b"node-e2e-db-password-77"
    );
    assert!(!extracted.join("db.json").exists());
    client
        .node_unpublish_volume(unpublish_request("vol-aws-3", &extracted))
        .await
        .unwrap();

    // A class naming a missing secret: NOT_FOUND reaches kubelet, nothing stays mounted.
    let missing_objects = "- {objectName: prod/missing, objectType: secretsmanager}";
    write_class(
        &work.path().join("classes"),
        &ns,
        "aws-missing",
        "aws",
        &[
            ("region", REGION),
            ("roleArn", ROLE),
            ("objects", missing_objects),
        ],
    );
    let other = node.target(&pod_uid(2), "secrets");
    let mut missing = publish_request("vol-aws-2", &other, "aws-missing", &ns);
    missing
        .volume_context
        .insert(TOKENS_KEY.into(), tokens.clone());
    let status = client.node_publish_volume(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("prod/missing"), "{status:?}");
    assert!(mount_entry(&other).is_none());

    client
        .node_unpublish_volume(unpublish_request("vol-aws-1", &target))
        .await
        .expect("unpublish");
    assert!(mount_entry(&target).is_none() && !target.exists());

    // Nothing secret in the logs: values, the pod token, the assumed role's credentials.
    let sts = proxy
        .calls()
        .into_iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .unwrap();
    let secret_key = between(&sts.answer, "<SecretAccessKey>", "</SecretAccessKey>").to_owned();
    let session = between(&sts.answer, "<SessionToken>", "</SessionToken>").to_owned();
    let logs = node.logs();
    assert!(
        logs.contains("reading from AWS"),
        "debug logs were captured"
    );
    for needle in [
        "node-e2e-db-password-77",
        "node-e2e-ssm-api-key-31",
        token.as_str(),
        secret_key.as_str(),
        session.as_str(),
    ] {
        assert!(
            !logs.contains(needle),
            "the node log holds a secret ({} chars)",
            needle.len()
        );
    }
}

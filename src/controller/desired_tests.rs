//! Unit tests of the SecretSync checks and the Secret built from provider files.

use super::*;
use crate::controller::crd::{SecretSyncSpec, SyncedKey, SyncedSecret};

fn sync(type_: Option<&str>, data: &[(&str, &str)]) -> SecretSync {
    let mut s = SecretSync::new(
        "db",
        SecretSyncSpec {
            secret_provider_class_name: "vault-db".into(),
            service_account_name: "web".into(),
            secret_object: SyncedSecret {
                type_: type_.map(str::to_owned),
                data: data
                    .iter()
                    .map(|(s, t)| SyncedKey {
                        source_path: (*s).into(),
                        target_key: (*t).into(),
                    })
                    .collect(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("shop".into());
    s
}

fn file(path: &str, value: &str) -> Payload {
    Payload {
        path: path.into(),
        mode: 0o644,
        contents: Redacted::new(value.as_bytes().to_vec()),
    }
}

fn refused(s: &SecretSync) -> Failure {
    check_spec(s).expect_err("refused")
}

#[test]
fn builds_type_labels_and_data_from_the_named_files() {
    let mut s = sync(
        Some("kubernetes.io/basic-auth"),
        &[("user", "username"), ("pw", "password")],
    );
    s.spec.secret_object.labels = Some([("team".to_owned(), "shop".to_owned())].into());
    check_spec(&s).unwrap();
    let want = build(
        &s,
        "shop/vault-db",
        &[
            file("user", "admin"),
            file("pw", "hunter2"),
            file("other", "x"),
        ],
    )
    .unwrap();
    assert_eq!(want.type_, "kubernetes.io/basic-auth");
    assert_eq!(want.data.len(), 2);
    assert_eq!(want.data["password"].expose(), b"hunter2");
    assert_eq!(want.labels["team"], "shop");
    assert_eq!(want.labels[SECRET_SYNC_LABEL], "db");
}

#[test]
fn a_source_path_the_provider_did_not_return_names_it_and_no_value() {
    let s = sync(None, &[("missing", "k")]);
    let f = build(&s, "shop/vault-db", &[file("present", "value-123")]).unwrap_err();
    assert_eq!(f.reason, Reason::UserInputValidationFailed);
    assert!(
        f.message.contains("\"missing\"") && f.message.contains("shop/vault-db"),
        "{}",
        f.message
    );
    assert!(!f.message.contains("value-123"), "{}", f.message);
}

#[test]
fn a_service_account_token_secret_is_refused() {
    let f = refused(&sync(
        Some("kubernetes.io/service-account-token"),
        &[("a", "b")],
    ));
    assert_eq!(f.reason, Reason::UserInputValidationFailed);
    assert!(f.message.contains("refused"), "{}", f.message);
}

#[test]
fn invalid_types_keys_and_duplicates_are_refused() {
    for s in [
        sync(Some("bad type"), &[("a", "b")]),
        sync(Some(""), &[("a", "b")]).tap(|s| s.spec.secret_object.type_ = Some(" ".into())),
        sync(None, &[("a", "../etc")]),
        sync(None, &[("a", "k"), ("b", "k")]),
        sync(None, &[]),
    ] {
        assert_eq!(refused(&s).reason, Reason::UserInputValidationFailed);
    }
}

#[test]
fn reserved_label_and_annotation_prefixes_are_refused_with_their_own_reasons() {
    let mut s = sync(None, &[("a", "b")]);
    s.spec.secret_object.labels = Some(
        [(
            "secrets-store.sync.x-k8s.io/secretsync".to_owned(),
            "x".to_owned(),
        )]
        .into(),
    );
    assert_eq!(refused(&s).reason, Reason::InvalidClusterSecretLabelError);
    let mut s = sync(None, &[("a", "b")]);
    s.spec.secret_object.annotations =
        Some([("secrets-store.sync.x-k8s.io/x".to_owned(), "y".to_owned())].into());
    assert_eq!(
        refused(&s).reason,
        Reason::InvalidClusterSecretAnnotationError
    );
    let mut s = sync(None, &[("a", "b")]);
    s.spec.secret_object.labels =
        Some([("team".to_owned(), "not a label value".to_owned())].into());
    assert_eq!(refused(&s).reason, Reason::UserInputValidationFailed);
}

#[test]
fn names_that_are_not_dns_subdomains_are_refused() {
    let mut s = sync(None, &[("a", "b")]);
    s.spec.service_account_name = "../x".into();
    assert_eq!(refused(&s).reason, Reason::UserInputValidationFailed);
}

#[test]
fn data_larger_than_a_secret_may_hold_is_refused() {
    let s = sync(None, &[("big", "k")]);
    let big = "x".repeat(MAX_DATA_BYTES + 1);
    let f = build(&s, "shop/c", &[file("big", &big)]).unwrap_err();
    assert!(
        f.message.contains("more than a Secret may hold"),
        "{}",
        f.message
    );
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for SecretSync {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

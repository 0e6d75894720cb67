//! Unit tests of the refresh annotation's bounds and of the keyed sync hash.

use super::*;
use crate::controller::crd::SecretSyncSpec;
use crate::controller::desired::DesiredSecret;

fn want(value: &str) -> DesiredSecret {
    DesiredSecret {
        type_: "Opaque".into(),
        data: [(
            "password".to_owned(),
            Redacted::new(value.as_bytes().to_vec()),
        )]
        .into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
    }
}

fn objects() -> (SecretSync, SecretProviderClass) {
    let mut sync = SecretSync::new("db", SecretSyncSpec::default());
    sync.metadata.uid = Some("uid-1".into());
    sync.metadata.generation = Some(1);
    let mut class = SecretProviderClass::new("c", Default::default());
    class.metadata.uid = Some("uid-2".into());
    (sync, class)
}

#[test]
fn the_refresh_annotation_is_zero_or_at_least_the_minimum() {
    assert_eq!(refresh_interval("0s"), Ok(Duration::ZERO));
    assert_eq!(refresh_interval(" 30m "), Ok(Duration::from_secs(1800)));
    assert_eq!(refresh_interval("10s"), Ok(MIN_REFRESH));
    assert!(
        refresh_interval("1ms")
            .unwrap_err()
            .contains("shorter than 10s")
    );
    assert!(
        refresh_interval("soon")
            .unwrap_err()
            .contains("not a duration")
    );
}

#[test]
fn the_sync_hash_is_keyed_and_moves_with_the_value_and_the_force_field() {
    let (mut sync, class) = objects();
    let key = VersionKey::from_bytes(&[7; 32], "test").unwrap();
    let other_key = VersionKey::from_bytes(&[8; 32], "test").unwrap();
    let hash = sync_hash(&key, &sync, &class, &want("pw-1"));
    assert!(hash.starts_with("v1:"));
    assert_eq!(
        hash,
        sync_hash(&key, &sync, &class, &want("pw-1")),
        "stable"
    );
    assert_ne!(
        hash,
        sync_hash(&other_key, &sync, &class, &want("pw-1")),
        "keyed"
    );
    assert_ne!(
        hash,
        sync_hash(&key, &sync, &class, &want("pw-2")),
        "the value"
    );
    sync.spec.force_synchronization = Some("1".into());
    assert_ne!(
        hash,
        sync_hash(&key, &sync, &class, &want("pw-1")),
        "the force field"
    );
    // Not a plain digest of the value: an unkeyed SHA-256 of it appears nowhere in the hash.
    let plain = ring::digest::digest(&ring::digest::SHA256, b"pw-1");
    let plain_b64 = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        plain.as_ref(),
    );
    assert!(!hash.contains(&plain_b64) && !hash.contains(&hex::encode(plain.as_ref())));
}

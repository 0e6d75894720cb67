//! Tests of the local class directory: lookups, edits, and bad files that fail only their own
//! classes.

use std::time::Duration;

use super::*;

const GOOD: &str = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                    metadata: {name: good, namespace: shop}\nspec: {provider: fake, parameters: {a: b}}\n";

#[tokio::test]
async fn directory_source_finds_classes_by_namespace_and_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("classes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
         apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: db}\nspec: {provider: vault, parameters: {roleName: app}}\n---\n\
         apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: db, namespace: prod}\nspec: {provider: aws}\n",
    )
    .unwrap();
    let source = DirectoryClasses::new(dir.path());
    let class = source.get("default", "db").await.unwrap();
    assert_eq!(class.spec.provider.as_deref(), Some("vault"));
    let class = source.get("prod", "db").await.unwrap();
    assert_eq!(class.spec.provider.as_deref(), Some("aws"));
    // An edit is seen at the next lookup.
    std::fs::write(
        dir.path().join("more.yml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: db, namespace: other}\nspec: {provider: gcp}\n",
    )
    .unwrap();
    let class = source.get("other", "db").await.unwrap();
    assert_eq!(class.spec.provider.as_deref(), Some("gcp"));
    std::fs::remove_file(dir.path().join("more.yml")).unwrap();
    let err = source.get("other", "db").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to get SecretProviderClass other/db: not found"
    );
}

/// A directory holding one good class and every kind of bad file.
fn hostile_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("good.yaml"), GOOD).unwrap();
    std::fs::write(
        d.join("malformed.yaml"),
        "kind: SecretProviderClass\nmetadata: {name: [unclosed\n",
    )
    .unwrap();
    std::fs::write(
        d.join("latin1.yaml"),
        b"kind: SecretProviderClass\nmetadata: {name: caf\xe9}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("typed.yaml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: typed, namespace: shop}\nspec: {provider: [1, 2], parameters: 7}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("badname.yaml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: ../Evil, namespace: shop}\nspec: {provider: fake}\n",
    )
    .unwrap();
    let mut huge = GOOD.replace("good", "huge");
    huge.push_str(&format!("# {}\n", "x".repeat(MAX_MANIFEST_BYTES as usize)));
    std::fs::write(d.join("huge.yaml"), huge).unwrap();
    nix::unistd::mkfifo(
        &d.join("fifo.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink(d.join("fifo.yaml"), d.join("link-to-fifo.yml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.json")).unwrap();
    std::fs::create_dir(d.join("x.yaml")).unwrap();
    dir
}

#[tokio::test]
async fn bad_files_fail_only_their_own_classes_and_never_stall() {
    let dir = hostile_dir();
    let source = DirectoryClasses::new(dir.path());
    let lookup = |ns: &'static str, name: &'static str| {
        tokio::time::timeout(Duration::from_secs(2), source.get(ns, name))
    };

    let class = lookup("shop", "good")
        .await
        .expect("no stall on the FIFO")
        .unwrap();
    assert_eq!(class.spec.provider.as_deref(), Some("fake"));

    // A wrong-typed class fails with its file and the reason.
    let err = lookup("shop", "typed").await.unwrap().unwrap_err();
    assert!(matches!(err, LookupError::Manifest { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with("failed to get SecretProviderClass shop/typed: manifest ")
            && shown.contains("typed.yaml"),
        "{shown}"
    );

    // A class that is nowhere: not found, naming the files that could not be read.
    let err = lookup("shop", "huge").await.unwrap().unwrap_err();
    assert!(matches!(err, LookupError::NotFoundSkipped { .. }), "{err}");
    let shown = err.to_string();
    for part in [
        "huge.yaml: larger than 1048576 bytes (1 MiB)",
        "latin1.yaml: not UTF-8",
        "malformed.yaml: document 1",
        "badname.yaml: document 1: metadata.name \"../Evil\" is not a valid",
    ] {
        assert!(shown.contains(part), "{part:?} missing from {shown}");
    }
    for skipped in ["fifo.yaml", "link-to-fifo.yml", "zero.json", "x.yaml:"] {
        assert!(
            !shown.contains(skipped),
            "{skipped} is skipped, not an error: {shown}"
        );
    }
}

#[tokio::test]
async fn a_fifo_does_not_block_the_runtime() {
    let dir = hostile_dir();
    let source = Arc::new(DirectoryClasses::new(dir.path()));
    // On a current-thread runtime, a blocking open of the FIFO would also stop the timer.
    let started = std::time::Instant::now();
    let ticker = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let found = tokio::time::timeout(Duration::from_secs(2), source.get("shop", "good")).await;
    assert!(found.expect("lookup finished").is_ok());
    ticker.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

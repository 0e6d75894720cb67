//! A provider's `MountInput` as publish builds it, and readers of its `MountOutput`, for tests
//! that call a provider directly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keymount::provider::{MountInput, MountOutput, ServiceAccountTokens};
use keymount::redact::Redacted;

/// A mount input as publish builds it: class parameters plus the pod's volume context.
pub(crate) fn input(ns: &str, sa: &str, tokens: &str, params: &[(&str, &str)]) -> MountInput {
    let mut attributes: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in [
        ("csi.storage.k8s.io/pod.name", "app-0"),
        ("csi.storage.k8s.io/pod.namespace", ns),
        (
            "csi.storage.k8s.io/pod.uid",
            "0b2e1f4c-0000-4000-8000-000000000001",
        ),
        ("csi.storage.k8s.io/serviceAccount.name", sa),
        ("secretProviderClass", "test"),
    ] {
        attributes.insert(k.into(), v.into());
    }
    MountInput {
        class: format!("{ns}/test"),
        attributes,
        tokens: ServiceAccountTokens::parse(tokens).unwrap(),
        secrets: Redacted::new(BTreeMap::new()),
        target_path: PathBuf::from("/nonexistent/target"),
        permission: 0o644,
        current_versions: Vec::new(),
    }
}

/// The bytes of file `name` in `output`.
pub(crate) fn bytes(output: &MountOutput, name: &str) -> Vec<u8> {
    output
        .files
        .iter()
        .find(|f| f.path == name)
        .unwrap_or_else(|| {
            panic!(
                "no file {name} in {:?}",
                output.files.iter().map(|f| &f.path).collect::<Vec<_>>()
            )
        })
        .contents
        .expose()
        .clone()
}

/// The text of file `name` in `output`.
pub(crate) fn text(output: &MountOutput, name: &str) -> String {
    String::from_utf8(bytes(output, name)).unwrap()
}

/// The mode of file `name` in `output`.
pub(crate) fn mode(output: &MountOutput, name: &str) -> u32 {
    output.files.iter().find(|f| f.path == name).unwrap().mode
}

//! The rotation gate: whether kubelet's periodic republish of a mounted volume asks the
//! provider again (the interval passed, a lease ends, the class asked for a refresh, or the
//! last fetch could not write the pod status), with a floor no class or store can go below.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::state::VolumeRecord;
use crate::class::SecretProviderClass;

/// Class annotation that overrides the rotation interval for one class (e.g. `30s`, `1h`).
pub(crate) const ROTATION_INTERVAL_ANNOTATION: &str = "keymount.io/rotation-poll-interval";
/// The least time between two fetches of one mounted volume, whatever a class's annotation or
/// a store's lease says (a value below is raised to it, with a warning): a class must not make
/// every republish call the store.
pub(crate) const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(1);
/// Class annotation whose change makes the next republish fetch at once (on-demand refresh).
pub(crate) const REFRESH_ANNOTATION: &str = "keymount.io/refresh-at";

/// The class's refresh annotation, as a volume's record keeps it after a fetch.
pub(super) fn refresh_stamp(class: &SecretProviderClass) -> Option<String> {
    let annotations = class.metadata.annotations.as_ref();
    annotations.and_then(|a| a.get(REFRESH_ANNOTATION)).cloned()
}

/// True when a mounted volume's content should be fetched again at `now` (also when its pod
/// status could not be written at the last fetch: the fetch writes it again). `interval` is
/// the node's; a class's annotation overrides it. Neither brings fetches closer than
/// [`MIN_ROTATION_INTERVAL`], nor does a store's lease; only a new refresh stamp (an explicit,
/// on-demand refresh) does.
pub(super) fn due(
    record: &VolumeRecord,
    class: &SecretProviderClass,
    interval: Option<Duration>,
    now: Timestamp,
) -> bool {
    if record.status_stale {
        return true;
    }
    if refresh_stamp(class) != record.refresh_stamp {
        return true;
    }
    let floor = SignedDuration::try_from(MIN_ROTATION_INTERVAL).expect("a second fits");
    if record.fetched_at.checked_add(floor).is_ok_and(|t| t > now) {
        return false;
    }
    if record.refresh_before.is_some_and(|t| t <= now) {
        return true;
    }
    let class_interval = class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATION_INTERVAL_ANNOTATION))
        .and_then(|v| humantime::parse_duration(v).ok());
    if class_interval.is_some_and(|i| i < MIN_ROTATION_INTERVAL) {
        tracing::warn!(
            class = %format!("{}/{}", record.pod_namespace, record.class),
            annotation = ROTATION_INTERVAL_ANNOTATION,
            floor = ?MIN_ROTATION_INTERVAL,
            "the class's rotation interval is below the floor; the floor applies"
        );
    }
    let interval = class_interval
        .or(interval)
        .unwrap_or_default()
        .max(MIN_ROTATION_INTERVAL);
    // An interval past the end of time is never due.
    SignedDuration::try_from(interval)
        .ok()
        .and_then(|interval| record.fetched_at.checked_add(interval).ok())
        .is_some_and(|due| due <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(annotations: &[(&str, &str)]) -> SecretProviderClass {
        let annotations: std::collections::BTreeMap<_, _> = annotations.iter().copied().collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "db", "namespace": "ns", "annotations": annotations},
            "spec": {"provider": "fake", "parameters": {"objects": "x"}},
        }))
        .unwrap()
    }

    fn fetched(ago: SignedDuration) -> VolumeRecord {
        VolumeRecord {
            volume_id: "v".into(),
            target_path: "/t".into(),
            pod_namespace: "ns".into(),
            pod_name: None,
            pod_uid: None,
            class: "db".into(),
            provider: "fake".into(),
            versions: vec![],
            fetched_at: Timestamp::now() - ago,
            refresh_before: None,
            refresh_stamp: None,
            status_stale: false,
            device: None,
            fs_group: None,
        }
    }

    #[test]
    fn the_interval_decides_and_a_class_cannot_go_below_the_floor() {
        let hour = Some(Duration::from_secs(3600));
        let now = Timestamp::now();
        let plain = class(&[]);
        assert!(!due(
            &fetched(SignedDuration::from_mins(59)),
            &plain,
            hour,
            now
        ));
        assert!(due(
            &fetched(SignedDuration::from_mins(61)),
            &plain,
            hour,
            now
        ));
        let eager = class(&[(ROTATION_INTERVAL_ANNOTATION, "1ms")]);
        let just = fetched(SignedDuration::from_millis(500));
        assert!(!due(&just, &eager, hour, now), "the floor holds");
        let mut leased = just.clone();
        leased.refresh_before = Some(now - SignedDuration::from_secs(1));
        assert!(
            !due(&leased, &plain, hour, now),
            "a lease does not beat the floor"
        );
    }

    #[test]
    fn a_new_refresh_stamp_or_a_stale_status_fetches_at_once() {
        let hour = Some(Duration::from_secs(3600));
        let just = fetched(SignedDuration::ZERO);
        let now = Timestamp::now();
        assert!(!due(&just, &class(&[]), hour, now));
        assert!(due(&just, &class(&[(REFRESH_ANNOTATION, "1")]), hour, now));
        let mut stale = just.clone();
        stale.status_stale = true;
        assert!(due(&stale, &class(&[]), hour, now));
    }
}

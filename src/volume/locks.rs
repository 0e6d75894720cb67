//! One lock per volume id: a second call for a volume that is being worked on is refused
//! (kubelet retries on ABORTED) instead of racing.
//!
//! Nobody ever waits for a volume's lock, so a lock is just the id's presence in a set of busy
//! ids: taken by inserting it, freed by removing it when the guard drops, whatever the call's
//! outcome. The set holds only the calls in flight; a failed publish leaves nothing behind
//! (a map of per-id mutexes kept ≈360 bytes per distinct failed volume id, forever).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The per-volume locks.
#[derive(Debug, Default)]
pub(crate) struct VolumeLocks {
    busy: Arc<Mutex<HashSet<String>>>,
}

/// The lock of one volume; dropping it frees the volume.
#[derive(Debug)]
#[must_use = "the volume is free again as soon as the guard is dropped"]
pub(crate) struct VolumeGuard {
    busy: Arc<Mutex<HashSet<String>>>,
    volume_id: String,
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.volume_id);
        // Give back what a burst of calls made the set grow to.
        let len = busy.len();
        if busy.capacity() > 64 && busy.capacity() > 4 * len {
            busy.shrink_to(len * 2);
        }
    }
}

impl VolumeLocks {
    /// Takes the lock of `volume_id`, or `None` if another call holds it.
    pub(crate) fn try_lock(&self, volume_id: &str) -> Option<VolumeGuard> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(volume_id.to_owned()) {
            return None;
        }
        Some(VolumeGuard {
            busy: Arc::clone(&self.busy),
            volume_id: volume_id.to_owned(),
        })
    }

    /// Number of volumes locked right now (calls in flight).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no call holds a lock.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_caller_is_refused_until_the_first_is_done() {
        let locks = VolumeLocks::default();
        let guard = locks.try_lock("v1").unwrap();
        assert!(locks.try_lock("v1").is_none());
        assert!(locks.try_lock("v2").is_some());
        drop(guard);
        assert!(locks.try_lock("v1").is_some());
    }

    #[test]
    fn sixty_thousand_distinct_ids_leave_nothing_behind() {
        let locks = VolumeLocks::default();
        for n in 0..60_000 {
            let guard = locks.try_lock(&format!("csi-failed-{n}")).unwrap();
            assert_eq!(locks.len(), 1);
            drop(guard); // the publish failed
        }
        assert!(locks.is_empty(), "{} locks kept", locks.len());
        let capacity = locks.busy.lock().unwrap().capacity();
        assert!(capacity <= 128, "the set kept room for {capacity} ids");
    }
}

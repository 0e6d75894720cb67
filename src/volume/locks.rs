//! One lock per volume id: a second call for a volume that is being worked on is refused
//! (kubelet retries on ABORTED) instead of racing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The per-volume locks.
#[derive(Debug, Default)]
pub struct VolumeLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl VolumeLocks {
    /// Takes the lock of `volume_id`, or `None` if another call holds it.
    pub fn try_lock(&self, volume_id: &str) -> Option<OwnedMutexGuard<()>> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(volume_id.to_owned()).or_default().clone()
        };
        lock.try_lock_owned().ok()
    }

    /// Forgets the lock of a volume that is gone, if no call holds it.
    pub fn forget(&self, volume_id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(volume_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(volume_id);
        }
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
}

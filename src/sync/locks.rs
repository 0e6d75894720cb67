//! One lock per Secret: syncs of different Secrets run at the same time, two syncs of one
//! Secret (two pods sharing it) take turns, so they never race on its owner references. A lock
//! lives only while someone holds or waits for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Lock = Arc<tokio::sync::Mutex<()>>;

/// Locks by `namespace/name` of a Secret.
#[derive(Debug, Default)]
pub(crate) struct SecretLocks {
    locks: Mutex<HashMap<String, Lock>>,
}

/// The locks of one sync, released on drop.
#[derive(Debug)]
pub(crate) struct Held {
    _guards: Vec<OwnedMutexGuard<()>>,
}

impl SecretLocks {
    /// Takes the locks of every Secret in `keys`, in sorted order so that two syncs sharing
    /// several Secrets never wait on each other in a circle.
    pub(crate) async fn lock_all<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Held {
        let keys: BTreeSet<&str> = keys.into_iter().collect();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            guards.push(self.lock_of(key).lock_owned().await);
        }
        Held { _guards: guards }
    }

    /// Locks known now: held, waited for, or released since the last `lock_all`.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    fn lock_of(&self, key: &str) -> Lock {
        let mut locks = self.map();
        // Forget the locks nobody holds or waits for (only this map refers to them).
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key.to_owned()).or_default().clone()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lock>> {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn different_secrets_are_held_at_once_and_one_secret_takes_turns() {
        let locks = Arc::new(SecretLocks::default());
        let a = locks.lock_all(["ns/a"]).await;
        // Another Secret: not blocked by `a`.
        let b = tokio::time::timeout(Duration::from_secs(1), locks.lock_all(["ns/b"]))
            .await
            .expect("a sync of another Secret waits for nothing");
        // The same Secret: waits until `a` is dropped.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock_all(["ns/c", "ns/a"]).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "a second sync of ns/a waits");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("it proceeds once the first is done")
            .unwrap();
        drop((b, c));
    }

    #[tokio::test]
    async fn released_locks_are_forgotten() {
        let locks = SecretLocks::default();
        for n in 0..10_000 {
            let held = locks.lock_all([format!("ns/s{n}").as_str()]).await;
            drop(held);
        }
        assert!(locks.len() <= 1, "{} locks kept", locks.len());
    }
}

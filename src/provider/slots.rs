//! Per-identity slots for cached credentials (Vault tokens, AWS credentials), bounded in
//! number. A slot's async mutex makes concurrent callers of one identity wait for one fetch.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// One identity's cached value, `None` until fetched.
pub(crate) type Slot<V> = Arc<tokio::sync::Mutex<Option<V>>>;

/// The slots of at most `capacity` identities.
#[derive(Debug)]
pub(crate) struct Slots<K, V> {
    slots: Mutex<HashMap<K, Slot<V>>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Slots<K, V> {
    /// Room for `capacity` identities; 0 means callers should not cache at all.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The configured capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slot of `key`, created if missing. When full, slots whose value is no longer
    /// `live` (and not in use) go first, then an arbitrary one.
    pub(crate) fn get_or_create(&self, key: &K, live: impl Fn(&V) -> bool) -> Slot<V> {
        let mut slots = self.slots.lock().unwrap();
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= self.capacity {
            slots.retain(|_, slot| match slot.try_lock() {
                Ok(cached) => cached.as_ref().is_some_and(&live),
                Err(_) => true,
            });
            if slots.len() >= self.capacity
                && let Some(oldest) = slots.keys().next().cloned()
            {
                slots.remove(&oldest);
            }
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// The slot of `key`, if it has one.
    pub(crate) fn get(&self, key: &K) -> Option<Slot<V>> {
        self.slots.lock().unwrap().get(key).cloned()
    }

    /// Number of identities with a slot.
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_slots_drop_dead_values_first() {
        let slots: Slots<&str, u32> = Slots::new(2);
        *slots.get_or_create(&"a", |_| true).lock().await = Some(1);
        *slots.get_or_create(&"b", |_| true).lock().await = Some(2);
        // "a" holds 1, which this caller calls dead: it goes, "b" stays.
        slots.get_or_create(&"c", |v| *v != 1);
        assert_eq!(slots.len(), 2);
        assert!(slots.get(&"a").is_none());
        assert_eq!(*slots.get(&"b").unwrap().lock().await, Some(2));
        // All live: one is dropped anyway to stay within capacity.
        slots.get_or_create(&"d", |_| true);
        assert_eq!(slots.len(), 2);
        assert!(slots.get(&"d").is_some());
    }
}

//! A small least-recently-used map: the HTTP clients of the Vault provider, one per TLS
//! setting and transport. A class chooses its TLS settings, so without a bound every new
//! combination would keep a client (and its connection pool) for the life of the process.

/// At most `capacity` entries; a lookup makes an entry the most recent, an insert into a full
/// map drops the least recent one.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    /// Oldest first.
    entries: Vec<(K, V)>,
    capacity: usize,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    /// Room for `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at);
        let value = entry.1.clone();
        self.entries.push(entry);
        Some(value)
    }

    /// Adds `key`, dropping the least recently used entry when full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, value));
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.get(&"a"), Some(1));
        lru.insert("c", 3);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.get(&"b"), None, "b was the least recently used");
        assert_eq!(lru.get(&"a"), Some(1));
        assert_eq!(lru.get(&"c"), Some(3));
        let mut many = Lru::new(16);
        for n in 0..1000 {
            many.insert(n, n);
        }
        assert_eq!(many.len(), 16);
        assert_eq!(many.get(&983), None);
        assert_eq!(many.get(&984), Some(984));
    }
}

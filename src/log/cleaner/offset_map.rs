//! The log cleaner's offset map: record key -> offset of the key's latest record, in memory of
//! a fixed, bounded size whatever the keys (Kafka's `SkimpyOffsetMap`).
//!
//! A key is stored as a 128-bit hash, never as the key itself, so every entry costs 24 bytes:
//! the two hash halves and the offset. The table uses open addressing with linear probing and
//! refuses new keys past `load_factor` of its slots; the cleaner then cleans only up to the last
//! offset it mapped and picks up the rest on the next pass. Two keys with the same 128-bit hash
//! would be taken for one (the chance is negligible, as with Kafka's MD5). The hash is keyed
//! at random per map, so producers cannot choose keys that pile up in one probe sequence.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Bytes of memory per slot: a 128-bit key hash and an offset.
pub const BYTES_PER_ENTRY: usize = 24;

/// Words per slot in `slots`: hash high, hash low, offset + 1 (0 marks an empty slot).
const WORDS: usize = 3;

pub struct OffsetMap {
    /// `WORDS` words per slot. Allocated zeroed, so untouched pages cost no memory.
    slots: Vec<u64>,
    capacity: usize,
    max_entries: usize,
    entries: usize,
    lookups: u64,
    probes: u64,
    seed: RandomState,
}

impl OffsetMap {
    /// A map of `slots` slots that accepts up to `load_factor` of them as entries (at least
    /// one, and always leaving one slot free so that probing ends).
    pub fn with_slots(slots: usize, load_factor: f64) -> Self {
        let capacity = slots.max(2);
        let by_load = (capacity as f64 * load_factor.clamp(0.0, 1.0)) as usize;
        let max_entries = by_load.clamp(1, capacity - 1);
        Self {
            slots: vec![0u64; capacity * WORDS],
            capacity,
            max_entries,
            entries: 0,
            lookups: 0,
            probes: 0,
            seed: RandomState::new(),
        }
    }

    /// The 128-bit hash of a record key: two keyed SipHash-1-3 digests with different
    /// prefixes.
    fn key_hash(&self, key: &[u8]) -> [u64; 2] {
        let mut a = self.seed.build_hasher();
        a.write_u8(0x5a);
        a.write(key);
        let mut b = self.seed.build_hasher();
        b.write_u8(0xa5);
        b.write(key);
        b.write_usize(key.len());
        [a.finish(), b.finish()]
    }

    /// How many slots a memory budget of `bytes` allows.
    pub fn slots_for_memory(bytes: usize) -> usize {
        (bytes / BYTES_PER_ENTRY).max(2)
    }

    /// The memory the table holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.capacity * BYTES_PER_ENTRY
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    #[cfg(test)]
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    #[cfg(test)]
    /// Average probes per lookup so far (1.0 is perfect).
    pub fn probe_ratio(&self) -> f64 {
        if self.lookups == 0 {
            1.0
        } else {
            self.probes as f64 / self.lookups as f64
        }
    }

    /// The slot holding `hash`, or the empty slot where it would go.
    fn find(&mut self, hash: [u64; 2]) -> usize {
        let mut i = (hash[0] % self.capacity as u64) as usize;
        self.lookups += 1;
        loop {
            self.probes += 1;
            let at = i * WORDS;
            let stored = self.slots[at + 2];
            if stored == 0 || (self.slots[at] == hash[0] && self.slots[at + 1] == hash[1]) {
                return i;
            }
            i += 1;
            if i == self.capacity {
                i = 0;
            }
        }
    }

    /// Records `offset` as the latest for `key`. Updating a key already present always works;
    /// a new key is refused (returns false) once the map holds `max_entries` keys.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        debug_assert!(offset >= 0);
        let hash = self.key_hash(key);
        let i = self.find(hash);
        let at = i * WORDS;
        if self.slots[at + 2] == 0 {
            if self.entries >= self.max_entries {
                return false;
            }
            self.slots[at] = hash[0];
            self.slots[at + 1] = hash[1];
            self.entries += 1;
        }
        self.slots[at + 2] = offset as u64 + 1;
        true
    }

    #[cfg(test)]
    /// Whether `key` could be recorded now: it is present, or there is room for it.
    pub fn can_put(&mut self, key: &[u8]) -> bool {
        self.entries < self.max_entries || self.get(key).is_some()
    }

    /// The latest offset recorded for `key`.
    pub fn get(&mut self, key: &[u8]) -> Option<i64> {
        let i = self.find(self.key_hash(key));
        match self.slots[i * WORDS + 2] {
            0 => None,
            stored => Some(stored as i64 - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_per_key() {
        let mut m = OffsetMap::with_slots(64, 0.9);
        assert!(m.is_empty());
        assert!(m.put(b"a", 0));
        assert!(m.put(b"b", 1));
        assert!(m.put(b"a", 2));
        assert!(m.put(b"", 3));
        assert_eq!(m.get(b"a"), Some(2));
        assert_eq!(m.get(b"b"), Some(1));
        assert_eq!(m.get(b""), Some(3));
        assert_eq!(m.get(b"c"), None);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn bounded_capacity_refuses_new_keys_but_updates_old_ones() {
        let mut m = OffsetMap::with_slots(10, 0.5);
        assert_eq!(m.max_entries(), 5);
        for i in 0..5u8 {
            assert!(m.put(&[i], i as i64));
        }
        assert!(!m.can_put(&[9]));
        assert!(!m.put(&[9], 9));
        assert!(m.can_put(&[1]));
        assert!(m.put(&[1], 100));
        assert_eq!(m.get(&[1]), Some(100));
        assert_eq!(m.get(&[9]), None);
        assert_eq!(m.len(), 5);
        assert_eq!(m.memory_bytes(), 10 * BYTES_PER_ENTRY);
    }

    #[test]
    fn full_load_keeps_one_slot_free_and_many_keys_are_exact() {
        let m = OffsetMap::with_slots(4, 1.0);
        assert_eq!(m.max_entries(), 3);
        let mut m = OffsetMap::with_slots(OffsetMap::slots_for_memory(24 * 20_000), 0.9);
        for i in 0..18_000u32 {
            assert!(m.put(format!("key-{i}").as_bytes(), i as i64));
        }
        for i in 0..18_000u32 {
            assert_eq!(m.get(format!("key-{i}").as_bytes()), Some(i as i64));
        }
        assert_eq!(m.get(b"key-18000"), None);
        assert!(m.probe_ratio() < 20.0, "probe ratio {}", m.probe_ratio());
    }
}

//! Decision cache of one route condition.
//!
//! A CEL condition is a pure function of what it reads (the standard library has no clock or
//! randomness), and `access` tells exactly what that is. So its boolean outcome can be kept,
//! keyed by the raw bytes it read: equal bytes mean equal values mean an equal outcome. Only
//! successful outcomes are kept (errors are evaluated every time, for their message). The
//! cache is bounded (cleared when full) and switches itself off for a while when it mostly
//! misses, e.g. for a condition over a field that is different in every message.

use std::collections::HashMap;
use std::sync::Mutex;

/// Lookups per judging window while the cache is on.
const WINDOW: u32 = 4096;
/// Evaluations without the cache after a window that mostly missed.
const COOLDOWN: u32 = 65_536;

/// Longest projection kept (longer ones are evaluated every time).
pub const MAX_KEY: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Box<[u8]>, bool>,
    lookups: u32,
    hits: u32,
    /// Evaluations left before the cache is tried again (0 = on).
    off_for: u32,
}

/// Bounded map from a condition's projection to its outcome.
#[derive(Debug)]
pub struct DecisionCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(bool),
    /// Not there: store the outcome with `insert`.
    Miss,
    /// Cache resting: evaluate, do not store.
    Off,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, key: &[u8]) -> Lookup {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.off_for > 0 {
            inner.off_for -= 1;
            return Lookup::Off;
        }
        inner.lookups += 1;
        let found = inner.map.get(key).copied();
        if found.is_some() {
            inner.hits += 1;
        }
        if inner.lookups >= WINDOW {
            if inner.hits * 4 < inner.lookups {
                inner.off_for = COOLDOWN;
                inner.map.clear();
                inner.map.shrink_to_fit();
            }
            inner.lookups = 0;
            inner.hits = 0;
        }
        match found {
            Some(b) => Lookup::Hit(b),
            None => Lookup::Miss,
        }
    }

    pub fn insert(&self, key: &[u8], outcome: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.off_for > 0 {
            return;
        }
        if inner.map.len() >= self.capacity {
            inner.map.clear();
        }
        inner.map.insert(key.into(), outcome);
    }

    /// Entries held (for tests and stats).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A projection being built: length-prefixed parts in a fixed buffer (no allocation).
pub struct KeyBuf {
    buf: [u8; MAX_KEY],
    len: usize,
    overflow: bool,
}

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf {
            buf: [0; MAX_KEY],
            len: 0,
            overflow: false,
        }
    }
}

impl KeyBuf {
    /// Start over (the buffer is reused, not zeroed).
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    /// Append one part: `None` (absent) and `Some(b"")` stay distinct.
    pub fn part(&mut self, bytes: Option<&[u8]>) {
        let (tag, data): (u8, &[u8]) = match bytes {
            None => (0, b""),
            Some(b) => (1, b),
        };
        let need = 5 + data.len();
        if self.overflow || self.len + need > MAX_KEY {
            self.overflow = true;
            return;
        }
        self.buf[self.len] = tag;
        self.buf[self.len + 1..self.len + 5].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.buf[self.len + 5..self.len + need].copy_from_slice(data);
        self.len += need;
    }

    /// The projection, or `None` when it did not fit.
    pub fn bytes(&self) -> Option<&[u8]> {
        (!self.overflow).then_some(&self.buf[..self.len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_outcomes_and_stays_bounded() {
        let c = DecisionCache::new(2);
        assert_eq!(c.get(b"a"), Lookup::Miss);
        c.insert(b"a", true);
        c.insert(b"b", false);
        assert_eq!(c.get(b"a"), Lookup::Hit(true));
        assert_eq!(c.get(b"b"), Lookup::Hit(false));
        c.insert(b"c", true); // full: cleared first
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(b"a"), Lookup::Miss);
    }

    #[test]
    fn rests_when_it_mostly_misses() {
        let c = DecisionCache::new(1 << 20);
        for i in 0..WINDOW {
            let key = i.to_le_bytes();
            if c.get(&key) == Lookup::Miss {
                c.insert(&key, true);
            }
        }
        assert_eq!(c.get(b"x"), Lookup::Off);
        assert!(c.is_empty());
    }

    #[test]
    fn key_parts_are_unambiguous() {
        let mut a = KeyBuf::default();
        a.part(Some(b"ab"));
        a.part(Some(b"c"));
        let mut b = KeyBuf::default();
        b.part(Some(b"a"));
        b.part(Some(b"bc"));
        assert_ne!(a.bytes(), b.bytes());
        let mut n = KeyBuf::default();
        n.part(None);
        let mut e = KeyBuf::default();
        e.part(Some(b""));
        assert_ne!(n.bytes(), e.bytes());
        let mut big = KeyBuf::default();
        big.part(Some(&[0; MAX_KEY]));
        assert_eq!(big.bytes(), None);
    }
}

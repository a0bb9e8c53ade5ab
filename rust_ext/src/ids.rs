//! Message ids: ULID-layout ids (48-bit ms timestamp + 80 random bits, Crockford base32)
//! and deterministic ids derived from (parent id, agent, output index).

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Digit of each byte (either case), or 0xFF: one lookup per character, not a search.
const DIGITS: [u8; 256] = {
    let mut table = [0xFFu8; 256];
    let mut i = 0;
    while i < 32 {
        let c = ALPHABET[i];
        table[c as usize] = i as u8;
        table[c.to_ascii_lowercase() as usize] = i as u8;
        i += 1;
    }
    table
};
/// Mask of the 80 low (random) bits of an id.
pub const RAND_MASK: u128 = (1u128 << 80) - 1;
const TS_MASK: u64 = (1u64 << 48) - 1;
/// Length of an encoded id.
pub const ID_LEN: usize = 26;

/// Encode a 128-bit value as 26 Crockford base32 characters (most significant first).
pub fn encode(value: u128) -> String {
    let mut out = [0u8; ID_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (ID_LEN - 1 - i);
        *slot = ALPHABET[((value >> shift) & 0x1f) as usize];
    }
    out.iter().map(|&b| b as char).collect()
}

fn decode_char(c: u8) -> Option<u8> {
    match DIGITS[c as usize] {
        0xFF => None,
        d => Some(d),
    }
}

/// Decode a canonical 26-character ULID (either case); `None` when it is not one.
pub fn decode(s: &str) -> Option<u128> {
    let bytes = s.as_bytes();
    if bytes.len() != ID_LEN {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let d = decode_char(c)?;
        if i == 0 && d > 7 {
            return None; // would overflow 128 bits
        }
        value = (value << 5) | u128::from(d);
    }
    Some(value)
}

/// Monotonic ULID generator state (one per process).
#[derive(Debug, Default)]
pub struct Generator {
    last_ms: u64,
    last_rand: u128,
    fork_generation: u64,
}

impl Generator {
    /// Next id value at `now_ms`; `fresh` supplies random bits when a new millisecond starts.
    /// Within one millisecond (or when the clock steps back) the random part is incremented,
    /// so ids from one generator are strictly increasing.
    pub fn next_value(&mut self, now_ms: u64, fresh: impl FnOnce() -> u128) -> u128 {
        let now_ms = now_ms & TS_MASK;
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.last_rand = fresh() & RAND_MASK;
        } else if self.last_rand >= RAND_MASK {
            // Random part exhausted within this millisecond: borrow the next millisecond.
            self.last_ms = (self.last_ms + 1) & TS_MASK;
            self.last_rand = fresh() & RAND_MASK;
        } else {
            self.last_rand += 1;
        }
        (u128::from(self.last_ms) << 80) | self.last_rand
    }
}

static GENERATOR: Mutex<Generator> = Mutex::new(Generator {
    last_ms: 0,
    last_rand: 0,
    fork_generation: 0,
});

/// Bumped in the child after every fork, so a forked worker never continues its parent's
/// sequence (cheaper than asking for the pid on every call).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(1);
static AT_FORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn fork_generation() -> u64 {
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic (async-signal-safe).
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    FORK_GENERATION.load(Ordering::SeqCst)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_bits() -> u128 {
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf).is_err() {
        // Practically unreachable; fall back to hashing time and a stack address.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let local = 0u8;
        let mut h = Sha256::new();
        h.update(nanos.to_le_bytes());
        h.update((&local as *const u8 as usize).to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        buf.copy_from_slice(&h.finalize()[..16]);
    }
    u128::from_be_bytes(buf)
}

/// A new time-ordered id, monotonic within this process.
pub fn new_id() -> String {
    let generation = fork_generation();
    let value = {
        let mut g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        if g.fork_generation != generation {
            // First use, or we are a forked child: never continue the parent's sequence.
            *g = Generator {
                fork_generation: generation,
                ..Generator::default()
            };
        }
        g.next_value(now_ms(), random_bits)
    };
    encode(value)
}

fn derive_hash(parent_id: &str, agent: &str, index: u64) -> u128 {
    let mut h = Sha256::new();
    h.update(b"agentflow.derive_id.v1\0");
    h.update((parent_id.len() as u64).to_be_bytes());
    h.update(parent_id.as_bytes());
    h.update((agent.len() as u64).to_be_bytes());
    h.update(agent.as_bytes());
    h.update(index.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Deterministic id of output `index` of `agent` for the input `parent_id`.
///
/// A valid ULID parent keeps its timestamp (first 10 characters) so derived ids sort near
/// their parent; otherwise the whole id comes from the hash. The last 16 characters are
/// always 80 bits of SHA-256 over the length-prefixed (parent, agent, index).
pub fn derive_id(parent_id: &str, agent: &str, index: u64) -> String {
    let hash = derive_hash(parent_id, agent, index);
    let value = match decode(parent_id) {
        Some(parent) => (parent & !RAND_MASK) | (hash & RAND_MASK),
        None => hash,
    };
    encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for v in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ] {
            let s = encode(v);
            assert_eq!(s.len(), 26);
            assert_eq!(decode(&s), Some(v));
            assert_eq!(decode(&s.to_ascii_lowercase()), Some(v));
        }
        assert_eq!(encode(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(encode(0), "00000000000000000000000000");
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(decode(""), None);
        assert_eq!(decode("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(decode("0000000000000000000000000U"), None);
        assert_eq!(decode("000000000000000000000000000"), None);
        assert_eq!(decode("0000000000000000000000000é"), None);
    }

    #[test]
    fn generator_is_monotonic_within_a_millisecond() {
        let mut g = Generator::default();
        let a = g.next_value(1000, || 5);
        let b = g.next_value(1000, || 99);
        let c = g.next_value(999, || 99); // clock stepped back
        assert_eq!(a & RAND_MASK, 5);
        assert_eq!(b, a + 1);
        assert_eq!(c, b + 1);
        let d = g.next_value(1001, || 7);
        assert_eq!(d >> 80, 1001);
        assert_eq!(d & RAND_MASK, 7);
    }

    #[test]
    fn generator_overflow_moves_to_next_millisecond() {
        let mut g = Generator::default();
        let a = g.next_value(10, || RAND_MASK);
        let b = g.next_value(10, || 3);
        assert!(b > a);
        assert_eq!(b >> 80, 11);
        assert_eq!(b & RAND_MASK, 3);
    }

    #[test]
    fn new_ids_are_sorted_and_unique() {
        let ids: Vec<String> = (0..10_000).map(|_| new_id()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        assert!(ids.iter().all(|s| decode(s).is_some()));
    }

    #[test]
    fn derive_is_deterministic_and_keeps_prefix() {
        let parent = "01HZX3K5M8Q4W2E6R7T9Y0ABCD";
        let a = derive_id(parent, "triage", 0);
        assert_eq!(a, derive_id(parent, "triage", 0));
        assert_eq!(&a[..10], &parent[..10]);
        assert_ne!(a, derive_id(parent, "triage", 1));
        assert_ne!(a, derive_id(parent, "triage2", 0));
        // Length prefixes keep ("a|b", "c") and ("a", "b|c") apart.
        assert_ne!(derive_id("a|b", "c", 0), derive_id("a", "b|c", 0));
        // A lower-case parent is still a ULID: its timestamp prefix is kept (upper-cased).
        let lower = derive_id(&parent.to_ascii_lowercase(), "triage", 0);
        assert_eq!(&lower[..10], &parent[..10]);
        let other = derive_id("kafka:orders:0:17", "triage", 0);
        assert_eq!(other.len(), 26);
        assert!(decode(&other).is_some());
    }
}

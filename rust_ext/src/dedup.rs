//! Bounded, time-windowed set of recently seen message ids.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// An id's 128-bit fingerprint: SipHash-1-3 under a key drawn per window, so ids nobody can
/// predict the key of never collide in practice (about n^2 / 2^129 for n ids), and the
/// window holds plain numbers instead of a heap string per id.
pub type Fingerprint = u128;

/// The table's hasher: a fingerprint is already a keyed hash, so its low bits are the hash.
#[derive(Debug, Default)]
pub struct Folded(u64);

impl Hasher for Folded {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here (write_u128 below); fold anything else anyway.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64 ^ (value >> 64) as u64;
    }
}

/// Ids seen within the last `window` seconds, at most `max_entries` of them.
///
/// An id is remembered from its first sighting (a repeat does not extend it) until
/// `now - first_seen >= window`, or until it is the oldest entry and room is needed.
#[derive(Debug)]
pub struct Window {
    window: f64,
    max_entries: usize,
    key: (u64, u64),
    /// fingerprint -> (first seen, generation)
    entries: HashMap<Fingerprint, (f64, u64), BuildHasherDefault<Folded>>,
    /// Insertion order: (generation, id). Entries whose generation no longer matches are stale.
    order: VecDeque<(u64, Fingerprint)>,
    generation: u64,
}

fn random_key() -> (u64, u64) {
    let mut bytes = [0u8; 16];
    // Without an OS random source the key is fixed: still correct, just predictable.
    let _ = getrandom::fill(&mut bytes);
    let (a, b) = bytes.split_at(8);
    (
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    )
}

impl Window {
    pub fn new(window: f64, max_entries: usize) -> Result<Window, String> {
        if !(window.is_finite() && window > 0.0) {
            return Err(format!(
                "window_seconds must be a positive number, got {window}"
            ));
        }
        if max_entries == 0 {
            return Err("max_entries must be at least 1".to_owned());
        }
        Ok(Window {
            window,
            max_entries,
            key: random_key(),
            entries: HashMap::default(),
            order: VecDeque::new(),
            generation: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The fingerprint this window keeps for `id`.
    pub fn fingerprint(&self, id: &str) -> Fingerprint {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(id.as_bytes());
        h.finish128().as_u128()
    }

    fn pop_oldest(&mut self) {
        while let Some((generation, id)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|e| e.1 == generation) {
                self.entries.remove(&id);
                return;
            }
        }
    }

    fn evict_expired(&mut self, now: f64) {
        while let Some(&(generation, id)) = self.order.front() {
            match self.entries.get(&id) {
                Some(&(ts, g)) if g == generation => {
                    if now - ts >= self.window {
                        self.entries.remove(&id);
                        self.order.pop_front();
                    } else {
                        break;
                    }
                }
                _ => {
                    self.order.pop_front(); // stale
                }
            }
        }
    }

    /// Record `id` at `now`; true when it was already recorded within the window.
    pub fn seen(&mut self, id: &str, now: f64) -> bool {
        self.evict_expired(now);
        let fp = self.fingerprint(id);
        if self.contains_fp(fp, now) {
            return true;
        }
        self.insert(fp, now);
        false
    }

    /// Whether `id` was recorded less than a window before `now` (records nothing).
    pub fn contains(&self, id: &str, now: f64) -> bool {
        self.contains_fp(self.fingerprint(id), now)
    }

    /// `contains`, for a fingerprint from `fingerprint`.
    pub fn contains_fp(&self, fp: Fingerprint, now: f64) -> bool {
        self.entries
            .get(&fp)
            .is_some_and(|&(ts, _)| now - ts < self.window)
    }

    /// Record `id` as seen at `now`, restarting its window if it was there already.
    pub fn record(&mut self, id: &str, now: f64) {
        self.record_fp(self.fingerprint(id), now);
    }

    /// `record`, for a fingerprint from `fingerprint`.
    pub fn record_fp(&mut self, fp: Fingerprint, now: f64) {
        self.evict_expired(now);
        self.insert(fp, now);
    }

    fn insert(&mut self, fp: Fingerprint, now: f64) {
        self.generation += 1;
        self.entries.insert(fp, (now, self.generation));
        self.order.push_back((self.generation, fp));
        while self.entries.len() > self.max_entries {
            self.pop_oldest();
        }
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(g, id)| entries.get(id).is_some_and(|e| e.1 == *g));
        }
    }
}

fn monotonic(py: Python<'_>) -> PyResult<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
        Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    } else {
        py.import("time")?.call_method0("monotonic")?.extract()
    }
}

/// Time-windowed, size-bounded memory of message ids (duplicate detection).
#[pyclass(module = "agentflow._native", name = "DedupWindow")]
pub struct DedupWindow {
    inner: Window,
}

#[pymethods]
impl DedupWindow {
    #[new]
    fn new(window_seconds: f64, max_entries: i64) -> PyResult<Self> {
        let max = usize::try_from(max_entries)
            .map_err(|_| PyValueError::new_err("max_entries must be at least 1"))?;
        Window::new(window_seconds, max)
            .map(|inner| DedupWindow { inner })
            .map_err(PyValueError::new_err)
    }

    #[pyo3(signature = (message_id, now=None))]
    fn seen(&mut self, py: Python<'_>, message_id: &str, now: Option<f64>) -> PyResult<bool> {
        let now = match now {
            Some(t) if t.is_nan() => return Err(PyValueError::new_err("now must not be NaN")),
            Some(t) => t,
            None => monotonic(py)?,
        };
        Ok(self.inner.seen(message_id, now))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// Fingerprints of ids a flush accepted (`kafka_flush`), to remember in the `RecentIds`
/// they were taken for once the flush was sent.
#[pyclass(module = "agentflow._native", name = "Fingerprints", frozen)]
pub struct Fingerprints {
    pub(crate) key: (u64, u64),
    pub(crate) fps: Vec<Fingerprint>,
}

#[pymethods]
impl Fingerprints {
    fn __len__(&self) -> usize {
        self.fps.len()
    }
}

/// Ids accepted in the last `window` seconds (at most `max_size`): a lookup records nothing,
/// an add restarts the id's window. A window of 0 or less keeps nothing.
#[pyclass(module = "agentflow._native", name = "RecentIds")]
pub struct RecentIds {
    inner: Option<Window>,
}

impl RecentIds {
    /// The window, for other native code (None when nothing is kept).
    pub(crate) fn inner(&self) -> Option<&Window> {
        self.inner.as_ref()
    }

    /// The key fingerprints of this window are taken with (None when nothing is kept).
    pub(crate) fn key(&self) -> Option<(u64, u64)> {
        self.inner.as_ref().map(|w| w.key)
    }
}

#[pymethods]
impl RecentIds {
    #[new]
    #[pyo3(signature = (window, max_size=100_000))]
    fn new(window: f64, max_size: usize) -> PyResult<Self> {
        if window.is_nan() {
            return Err(PyValueError::new_err("window must not be NaN"));
        }
        let inner = if window > 0.0 {
            Some(Window::new(window, max_size.max(1)).map_err(PyValueError::new_err)?)
        } else {
            None
        };
        Ok(RecentIds { inner })
    }

    /// The window in seconds (0 when nothing is kept).
    #[getter]
    fn window(&self) -> f64 {
        self.inner.as_ref().map_or(0.0, |w| w.window)
    }

    /// Whether `item` was added within the window before `now` (a clock reading of
    /// `time.monotonic`).
    fn seen(&self, item: &str, now: f64) -> bool {
        self.inner.as_ref().is_some_and(|w| w.contains(item, now))
    }

    fn __contains__(&self, py: Python<'_>, item: &str) -> PyResult<bool> {
        Ok(self.seen(item, monotonic(py)?))
    }

    /// Remember `item` for the window, from now.
    fn add(&mut self, py: Python<'_>, item: &str) -> PyResult<()> {
        if let Some(w) = self.inner.as_mut() {
            w.record(item, monotonic(py)?);
        }
        Ok(())
    }

    /// Remember every item (an iterable of str) for the window, reading the clock once.
    fn add_all(&mut self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(w) = self.inner.as_mut() else {
            return Ok(());
        };
        let now = monotonic(py)?;
        for item in items.try_iter()? {
            w.record(item?.cast::<pyo3::types::PyString>()?.to_str()?, now);
        }
        Ok(())
    }

    /// Remember the ids a flush accepted (fingerprints taken for this window), from now.
    fn add_fingerprints(&mut self, py: Python<'_>, accepted: &Fingerprints) -> PyResult<()> {
        let Some(w) = self.inner.as_mut() else {
            return Ok(());
        };
        if accepted.key != w.key {
            return Err(PyValueError::new_err(
                "fingerprints were taken for another RecentIds",
            ));
        }
        let now = monotonic(py)?;
        for &fp in &accepted.fps {
            w.record_fp(fp, now);
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, Window::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_bound() {
        let mut w = Window::new(10.0, 3).unwrap();
        assert!(!w.seen("a", 0.0));
        assert!(w.seen("a", 5.0));
        assert!(w.seen("a", 9.99));
        assert!(!w.seen("a", 10.0)); // expired exactly at the window edge, re-recorded
        assert!(w.seen("a", 19.0));
        assert!(!w.seen("b", 11.0));
        assert!(!w.seen("c", 12.0));
        assert!(!w.seen("d", 13.0)); // evicts "a", the oldest
        assert_eq!(w.len(), 3);
        assert!(!w.seen("a", 14.0));
        assert!(w.seen("d", 14.0));
        assert!(!w.seen("x", 100.0));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn record_restarts_the_window_and_contains_records_nothing() {
        let mut w = Window::new(10.0, 2).unwrap();
        assert!(!w.contains("a", 0.0));
        assert_eq!(w.len(), 0);
        w.record("a", 0.0);
        assert!(w.contains("a", 9.9));
        w.record("a", 8.0); // restarted: good until 18
        assert!(w.contains("a", 17.9));
        assert!(!w.contains("a", 18.0));
        w.record("b", 9.0);
        w.record("c", 9.5); // over max_entries: the oldest ("a", refreshed at 8) goes
        assert!(!w.contains("a", 10.0));
        assert!(w.contains("b", 10.0) && w.contains("c", 10.0));
    }

    #[test]
    fn clock_going_backwards_stays_bounded() {
        let mut w = Window::new(1.0, 4).unwrap();
        for i in 0..10_000 {
            let now = if i % 2 == 0 { 1000.0 } else { 0.0 };
            w.seen(&format!("id{}", i % 8), now + f64::from(i % 3));
        }
        assert!(w.len() <= 4);
        assert!(w.order.len() <= 2 * w.len() + 65);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Window::new(0.0, 1).is_err());
        assert!(Window::new(f64::NAN, 1).is_err());
        assert!(Window::new(1.0, 0).is_err());
    }
}

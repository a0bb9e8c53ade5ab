//! Bounded, time-windowed set of recently seen message ids.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Ids seen within the last `window` seconds, at most `max_entries` of them.
///
/// An id is remembered from its first sighting (a repeat does not extend it) until
/// `now - first_seen >= window`, or until it is the oldest entry and room is needed.
#[derive(Debug)]
pub struct Window {
    window: f64,
    max_entries: usize,
    /// id -> (first seen, generation)
    entries: HashMap<Arc<str>, (f64, u64)>,
    /// Insertion order: (generation, id). Entries whose generation no longer matches are stale.
    order: VecDeque<(u64, Arc<str>)>,
    generation: u64,
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
            entries: HashMap::new(),
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

    fn pop_oldest(&mut self) {
        while let Some((generation, id)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|e| e.1 == generation) {
                self.entries.remove(&id);
                return;
            }
        }
    }

    fn evict_expired(&mut self, now: f64) {
        while let Some((generation, id)) = self.order.front() {
            match self.entries.get(id) {
                Some(&(ts, g)) if g == *generation => {
                    if now - ts >= self.window {
                        self.entries.remove(id);
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
        if self.contains(id, now) {
            return true;
        }
        self.insert(id, now);
        false
    }

    /// Whether `id` was recorded less than a window before `now` (records nothing).
    pub fn contains(&self, id: &str, now: f64) -> bool {
        self.entries.get(id).is_some_and(|&(ts, _)| now - ts < self.window)
    }

    /// Record `id` as seen at `now`, restarting its window if it was there already.
    pub fn record(&mut self, id: &str, now: f64) {
        self.evict_expired(now);
        self.insert(id, now);
    }

    fn insert(&mut self, id: &str, now: f64) {
        self.generation += 1;
        let id: Arc<str> = Arc::from(id);
        self.entries.insert(Arc::clone(&id), (now, self.generation));
        self.order.push_back((self.generation, id));
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

/// Ids accepted in the last `window` seconds (at most `max_size`): a lookup records nothing,
/// an add restarts the id's window. A window of 0 or less keeps nothing.
#[pyclass(module = "agentflow._native", name = "RecentIds")]
pub struct RecentIds {
    inner: Option<Window>,
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

//! Per-partition offset bookkeeping of the Kafka consumer: which handed-out offsets are done,
//! what to commit, and the attempt record (see `agentflow/brokers/kafka_offsets.py`).

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::collections::VecDeque;

/// Run state of finished offsets (`kafka_attempts.DONE`); other states count hand-outs.
pub const DONE: i64 = -1;

/// Offsets `start..=end` share one state (DONE or attempts), as `kafka_attempts.Run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: i64,
    pub end: i64,
    pub state: i64,
}

/// One tracked offset.
#[derive(Clone, Copy, Debug)]
struct Slot {
    offset: i64,
    attempts: i64,
    done: bool,
}

/// Offsets handed out from one partition during one assignment, in fetch order.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Tracked slots from the first one not done, offsets strictly increasing (gaps allowed).
    window: VecDeque<Slot>,
    /// One past the highest tracked offset (None before the first).
    next: Option<i64>,
    /// What the previous owner left: sorted, non-overlapping runs (as `decode` returns them).
    prior: Vec<Run>,
    in_flight: usize,
}

impl Tracker {
    pub fn new(prior: Vec<Run>) -> Tracker {
        Tracker {
            prior,
            ..Tracker::default()
        }
    }

    /// DONE if the prior record says `offset` finished, else its earlier hand-outs (0: none).
    pub fn prior_state(&self, offset: i64) -> i64 {
        let i = self.prior.partition_point(|r| r.start <= offset);
        match i.checked_sub(1).map(|i| self.prior[i]) {
            Some(run) if run.end >= offset => run.state,
            _ => 0,
        }
    }

    /// True if `offset` lies past everything tracked.
    pub fn is_new(&self, offset: i64) -> bool {
        self.next.is_none_or(|next| offset >= next)
    }

    /// Track `offset` as handed out once more (`prior`: its prior state, when known).
    pub fn track(&mut self, offset: i64, prior: Option<i64>) -> Result<i64, String> {
        if let Some(next) = self.next.filter(|&next| offset < next) {
            return Err(format!("offset {offset} is not past {next}"));
        }
        let Some(next) = offset.checked_add(1) else {
            return Err(format!("offset {offset} is out of range"));
        };
        let earlier = prior.unwrap_or_else(|| self.prior_state(offset));
        let attempts = if earlier > 0 {
            earlier.saturating_add(1)
        } else {
            1
        };
        self.window.push_back(Slot {
            offset,
            attempts,
            done: false,
        });
        self.next = Some(next);
        self.in_flight += 1;
        Ok(attempts)
    }

    /// Track `offset` as done without handing it out.
    pub fn skip(&mut self, offset: i64) -> Result<(), String> {
        self.track(offset, None)?;
        let last = self.window.len() - 1;
        self.window[last].attempts -= 1;
        self.mark_done(last);
        Ok(())
    }

    /// Position of a tracked offset in the window.
    fn index(&self, offset: i64) -> Option<usize> {
        let first = self.window.front()?.offset;
        if offset < first {
            return None;
        }
        // Offsets mostly follow each other without gaps: try the direct position first.
        let guess = usize::try_from(offset.abs_diff(first)).unwrap_or(usize::MAX);
        if self.window.get(guess).is_some_and(|s| s.offset == offset) {
            return Some(guess);
        }
        self.window.binary_search_by_key(&offset, |s| s.offset).ok()
    }

    fn slot_mut(&mut self, offset: i64) -> Option<&mut Slot> {
        let i = self.index(offset)?;
        self.window.get_mut(i)
    }

    /// One more hand-out of a tracked offset; the new count (None: not tracked).
    pub fn handed_out_again(&mut self, offset: i64) -> Option<i64> {
        let slot = self.slot_mut(offset)?;
        slot.attempts = slot.attempts.saturating_add(1);
        Some(slot.attempts)
    }

    /// How often a tracked offset was handed out (None: not tracked).
    pub fn attempts(&self, offset: i64) -> Option<i64> {
        self.index(offset).map(|i| self.window[i].attempts)
    }

    /// True if `offset` is done; offsets below the window (or in a gap of it) count as done.
    pub fn is_done(&self, offset: i64) -> bool {
        match self.index(offset) {
            Some(i) => self.window[i].done,
            None => self.next.is_some_and(|next| offset < next),
        }
    }

    /// Mark `offset` done; false if it was not tracked or already done.
    pub fn done(&mut self, offset: i64) -> bool {
        match self.index(offset) {
            Some(i) if !self.window[i].done => {
                self.mark_done(i);
                true
            }
            _ => false,
        }
    }

    fn mark_done(&mut self, i: usize) {
        self.window[i].done = true;
        self.in_flight -= 1;
        // Done slots at the front are below the commit point now: forget them.
        while self.window.front().is_some_and(|s| s.done) {
            self.window.pop_front();
        }
    }

    /// The first offset not done, else one past the last tracked (None before the first).
    pub fn commit_offset(&self) -> Option<i64> {
        self.window.front().map(|s| s.offset).or(self.next)
    }

    /// The attempt record above the commit point: tracked slots, then untouched prior runs.
    pub fn runs(&self) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        // Neighbouring slots of one state make one run, across gaps in the offsets too.
        for slot in &self.window {
            let state = if slot.done { DONE } else { slot.attempts };
            if state == 0 {
                continue; // skipped, never handed out (unreachable: such slots are done)
            }
            match out.last_mut() {
                Some(run) if run.state == state => run.end = slot.offset,
                _ => out.push(Run {
                    start: slot.offset,
                    end: slot.offset,
                    state,
                }),
            }
        }
        let Some(next) = self.next else {
            out.extend_from_slice(&self.prior);
            return out;
        };
        for run in self.prior.iter().filter(|r| r.end >= next) {
            let start = run.start.max(next);
            match out.last_mut() {
                Some(last) if last.state == run.state && last.end == start - 1 => {
                    last.end = run.end;
                }
                _ => out.push(Run { start, ..*run }),
            }
        }
        out
    }
}

/// Offsets handed out from one partition during one assignment, in fetch order: what is
/// done, what to commit, and how often each offset was handed out.
#[pyclass(module = "agentflow._native", name = "PartitionTracker")]
pub struct PartitionTracker {
    /// Offset the group had committed when this member got the partition (None: no commit).
    #[pyo3(get, set)]
    committed: Option<i64>,
    inner: Tracker,
}

#[pymethods]
impl PartitionTracker {
    #[new]
    #[pyo3(signature = (committed=None, prior=None))]
    fn new(committed: Option<i64>, prior: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut runs = Vec::new();
        if let Some(prior) = prior {
            let py = prior.py();
            for run in prior.try_iter()? {
                let run = run?;
                runs.push(Run {
                    start: run.getattr(intern!(py, "start"))?.extract()?,
                    end: run.getattr(intern!(py, "end"))?.extract()?,
                    state: run.getattr(intern!(py, "state"))?.extract()?,
                });
            }
        }
        Ok(PartitionTracker {
            committed,
            inner: Tracker::new(runs),
        })
    }

    /// Whether the previous owner left a record to look up (rarely: a crash or handover).
    #[getter]
    fn has_prior(&self) -> bool {
        !self.inner.prior.is_empty()
    }

    /// One past the highest tracked offset (None before the first).
    #[getter]
    fn next_offset(&self) -> Option<i64> {
        self.inner.next
    }

    /// Tracked offsets that are not done.
    #[getter]
    fn in_flight(&self) -> usize {
        self.inner.in_flight
    }

    /// DONE if the attempt record says `offset` finished, else its earlier hand-outs.
    fn prior_state(&self, offset: i64) -> i64 {
        self.inner.prior_state(offset)
    }

    /// True if `offset` lies past everything tracked (records may be refetched).
    fn is_new(&self, offset: i64) -> bool {
        self.inner.is_new(offset)
    }

    /// Start tracking `offset` as handed out once more; return its hand-out count.
    #[pyo3(signature = (offset, prior=None))]
    fn track(&mut self, offset: i64, prior: Option<i64>) -> PyResult<i64> {
        self.inner
            .track(offset, prior)
            .map_err(PyValueError::new_err)
    }

    /// Track `offset` as done without handing it out (filtered or already finished).
    fn skip(&mut self, offset: i64) -> PyResult<()> {
        self.inner.skip(offset).map_err(PyValueError::new_err)
    }

    /// Count one more hand-out of a tracked offset (redelivery); return the new count.
    fn handed_out_again(&mut self, offset: i64) -> PyResult<i64> {
        self.inner
            .handed_out_again(offset)
            .ok_or_else(|| PyKeyError::new_err(offset))
    }

    /// How often a tracked offset was handed out.
    fn attempts(&self, offset: i64) -> PyResult<i64> {
        self.inner
            .attempts(offset)
            .ok_or_else(|| PyKeyError::new_err(offset))
    }

    /// True if `offset` is done (or was committed past).
    fn is_done(&self, offset: i64) -> bool {
        self.inner.is_done(offset)
    }

    /// Mark `offset` done; False if it was not tracked or already done.
    fn done(&mut self, offset: i64) -> bool {
        self.inner.done(offset)
    }

    /// The offset to commit: the first not-done one, else one past the last tracked.
    fn commit_offset(&self) -> Option<i64> {
        self.inner.commit_offset()
    }

    /// The attempt record above the commit point, as `kafka_attempts.Run` objects.
    fn runs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        // Once per commit, so the Python dataclass is fine; imported on first use only.
        static RUN: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let run = RUN.import(py, "agentflow.brokers.kafka_attempts", "Run")?;
        self.inner
            .runs()
            .into_iter()
            .map(|r| run.call1((r.start, r.end, r.state)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: i64, end: i64, state: i64) -> Run {
        Run { start, end, state }
    }

    #[test]
    fn commit_stops_at_the_first_unfinished_offset() {
        let mut t = Tracker::default();
        assert_eq!(t.commit_offset(), None);
        for offset in 10..15 {
            assert_eq!(t.track(offset, None), Ok(1));
        }
        assert!(t.done(12) && t.done(13));
        assert_eq!(t.commit_offset(), Some(10));
        assert!(t.done(10));
        assert_eq!(t.commit_offset(), Some(11));
        assert!(!t.done(10), "dropped from the window: not tracked any more");
        assert!(t.is_done(10));
        assert!(t.done(11) && t.done(14));
        assert_eq!((t.commit_offset(), t.in_flight), (Some(15), 0));
        assert!(t.window.is_empty());
        assert_eq!(t.track(3, None), Err("offset 3 is not past 15".to_owned()));
    }

    #[test]
    fn gaps_are_found_and_count_as_done() {
        let mut t = Tracker::default();
        for offset in [3, 7, 8, 20] {
            t.track(offset, None).unwrap();
        }
        assert_eq!(t.handed_out_again(8), Some(2));
        assert_eq!(t.attempts(20), Some(1));
        assert_eq!(t.attempts(5), None);
        assert_eq!(t.handed_out_again(21), None);
        assert!(t.is_done(5) && !t.is_done(7) && !t.is_done(21));
        assert!(!t.done(5));
        // Runs span the gaps between neighbours of one state.
        assert_eq!(t.runs(), vec![run(3, 7, 1), run(8, 8, 2), run(20, 20, 1)]);
        assert!(t.done(7));
        assert_eq!(t.commit_offset(), Some(3));
        assert_eq!(
            t.runs(),
            vec![run(3, 3, 1), run(7, 7, DONE), run(8, 8, 2), run(20, 20, 1)]
        );
    }

    #[test]
    fn prior_record_seeds_counts_and_survives_untouched() {
        let prior = vec![run(100, 100, 2), run(101, 102, DONE), run(103, 109, 1)];
        let mut t = Tracker::new(prior.clone());
        assert_eq!(t.runs(), prior, "nothing tracked: the record as it was");
        assert_eq!(
            [99, 100, 101, 105, 110].map(|o| t.prior_state(o)),
            [0, 2, DONE, 1, 0]
        );
        assert_eq!(t.track(100, None), Ok(3));
        t.skip(101).unwrap();
        assert_eq!(t.attempts(101), Some(DONE + 1), "a skip is no hand-out");
        assert_eq!(t.track(102, Some(DONE)), Ok(1));
        assert!(t.done(102));
        assert_eq!(t.track(103, None), Ok(2));
        assert_eq!(
            t.runs(),
            vec![
                run(100, 100, 3),
                run(101, 102, DONE),
                run(103, 103, 2),
                run(104, 109, 1)
            ]
        );
        assert!(t.done(103));
        // The tracked tail and the prior run after it merge when they touch with one state.
        let mut u = Tracker::new(vec![run(5, 9, 1)]);
        u.track(4, Some(0)).unwrap();
        assert_eq!(u.runs(), vec![run(4, 9, 1)]);
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        let mut t = Tracker::new(vec![run(i64::MAX - 1, i64::MAX, i64::MAX)]);
        assert_eq!(t.track(i64::MAX - 1, None), Ok(i64::MAX));
        assert_eq!(t.handed_out_again(i64::MAX - 1), Some(i64::MAX));
        assert!(t.track(i64::MAX, None).is_err());
        assert!(
            t.is_done(i64::MIN) && t.attempts(i64::MIN).is_none(),
            "below: done"
        );
    }
}

//! A flush's outputs sorted into Kafka record batches in one call.
//!
//! For every output of a flush the producer dropped ids accepted within its dedup window,
//! encoded the key, picked the partition (murmur2 of the key; keyless outputs of one flush
//! share one partition per topic, as Kafka's sticky partitioner keeps them) and appended the
//! record to its partition's batch: a dozen Python steps per message. `kafka_flush` does that
//! pass natively and hands back the batches, ready for `AIOKafkaProducer.send_batch`.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::dedup::{Fingerprint, Fingerprints, Folded, RecentIds};
use crate::kafka_batch::{KafkaBatch, HEADER_LEN};
use crate::partition::partition;

/// Where a topic's records go: its partitions (sorted) and the one for keyless records.
struct Target {
    partitions: Vec<i32>,
    sticky: i32,
}

/// One partition's batches, the last one open.
struct Group {
    topic: Py<PyString>,
    partition: i32,
    batches: Vec<KafkaBatch>,
}

/// What a flush sends: `(topic, partition, batch)` in partition order of first appearance,
/// the dedup ids accepted (to remember once sent), and the first record too large for
/// `max_request_size` as `(topic, bytes with the batch header)`, if any.
type Flush = (
    Vec<(Py<PyString>, i32, Py<KafkaBatch>)>,
    Fingerprints,
    Option<(Py<PyString>, usize)>,
);

/// Sort `messages` (OutMessage objects) into record batches of at most `batch_size` bytes.
///
/// `targets` maps every topic among them to `(sorted partitions, keyless partition)`; ids
/// (`dedup_id`, else the `af-id` header) seen by `recent` at `now`, or earlier in the flush,
/// are dropped. Every record carries `ts_ms`.
#[pyfunction]
#[pyo3(name = "kafka_flush")]
#[pyo3(signature = (messages, recent, now, targets, batch_size, ts_ms, max_request_size))]
#[allow(clippy::too_many_arguments)]
pub fn py_kafka_flush(
    py: Python<'_>,
    messages: &Bound<'_, PyAny>,
    recent: PyRef<'_, RecentIds>,
    now: f64,
    targets: &Bound<'_, PyDict>,
    batch_size: usize,
    ts_ms: i64,
    max_request_size: usize,
) -> PyResult<Flush> {
    let mut known: HashMap<String, Target> = HashMap::new();
    for (topic, target) in targets.iter() {
        let (partitions, sticky): (Vec<i32>, i32) = target.extract()?;
        if partitions.is_empty() {
            return Err(PyValueError::new_err(format!(
                "topic {topic} has no partitions"
            )));
        }
        known.insert(topic.extract()?, Target { partitions, sticky });
    }
    let window = recent.inner();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<(String, i32), usize> = HashMap::new();
    // The group of the last keyless record, by topic object: keyless records of a topic
    // share one partition, and a flush's records mostly share one topic object.
    let mut keyless: Option<(Bound<'_, PyString>, usize)> = None;
    let mut pending: HashSet<Fingerprint, BuildHasherDefault<Folded>> = HashSet::default();
    let mut accepted: Vec<Fingerprint> = Vec::new();
    let mut oversize: Option<(Py<PyString>, usize)> = None;
    for msg in messages.try_iter()? {
        let msg = msg?;
        let headers = msg.getattr(intern!(py, "headers"))?;
        let headers = headers.cast::<PyDict>()?;
        if let Some(w) = window {
            let dedup = msg.getattr(intern!(py, "dedup_id"))?;
            let dedup = if dedup.is_truthy()? {
                Some(dedup)
            } else {
                headers.get_item(intern!(py, "af-id"))?
            };
            if let Some(id) = dedup {
                let id = id.cast::<PyString>()?.to_str()?;
                if !id.is_empty() {
                    let fp = w.fingerprint(id);
                    if !pending.insert(fp) || w.contains_fp(fp, now) {
                        continue; // accepted already inside the window: dropped silently
                    }
                    accepted.push(fp);
                }
            }
        }
        let topic_obj = msg.getattr(intern!(py, "topic"))?.cast_into::<PyString>()?;
        let key_obj = msg.getattr(intern!(py, "key"))?;
        let key = if key_obj.is_none() {
            None
        } else {
            Some(key_obj.cast::<PyString>()?.to_str()?.as_bytes())
        };
        let g = match &keyless {
            Some((t, g)) if key.is_none() && t.is(&topic_obj) => *g,
            _ => {
                let topic = topic_obj.to_str()?;
                let target = known.get(topic).ok_or_else(|| {
                    PyValueError::new_err(format!("no partitions given for topic '{topic}'"))
                })?;
                let part = match key {
                    None => target.sticky,
                    // A topic has at most i32::MAX partitions: the count fits a u32.
                    Some(k) => {
                        target.partitions[partition(k, target.partitions.len() as u32) as usize]
                    }
                };
                let slot = (topic.to_owned(), part);
                let g = match group_of.get(&slot) {
                    Some(&g) => g,
                    None => {
                        groups.push(Group {
                            topic: topic_obj.clone().unbind(),
                            partition: part,
                            batches: vec![KafkaBatch::open(batch_size)],
                        });
                        group_of.insert(slot, groups.len() - 1);
                        groups.len() - 1
                    }
                };
                if key.is_none() {
                    keyless = Some((topic_obj.clone(), g));
                }
                g
            }
        };
        let payload = msg.getattr(intern!(py, "payload"))?;
        let value: Option<&[u8]> = if payload.is_none() {
            None
        } else {
            Some(payload.cast::<PyBytes>()?.as_bytes())
        };
        let group = &mut groups[g];
        let mut size = group
            .batches
            .last_mut()
            .expect("a group starts with a batch")
            .push_dict(value, key, headers, ts_ms)?;
        if size.is_none() {
            // Full: the next batch (its first record always fits).
            let mut next = KafkaBatch::open(batch_size);
            size = next.push_dict(value, key, headers, ts_ms)?;
            group.batches.push(next);
        }
        let size = size.unwrap_or(0) + HEADER_LEN;
        if size > max_request_size && oversize.is_none() {
            oversize = Some((topic_obj.unbind(), size));
        }
    }
    let mut built = Vec::new();
    for group in groups {
        for batch in group.batches {
            built.push((
                group.topic.clone_ref(py),
                group.partition,
                Py::new(py, batch)?,
            ));
        }
    }
    let key = recent.key().unwrap_or_default();
    Ok((built, Fingerprints { key, fps: accepted }, oversize))
}

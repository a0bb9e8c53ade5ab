//! `agentflow._native`: the Rust hot path of agentflow.
//!
//! Pure-Rust logic lives in the modules (tested with `cargo test`); the `#[pyfunction]`s and
//! `#[pyclass]`es are thin adapters over it. Nothing here panics across the boundary: bad input
//! becomes `ValueError`/`TypeError`.

use pyo3::prelude::*;

pub mod access;
pub mod cache;
pub mod cel_compile;
pub mod cel_eval;
pub mod codec;
pub mod dedup;
pub mod envelope;
pub mod fast;
pub mod hotpath;
pub mod ids;
pub mod kafka_batch;
pub mod kafka_flush;
pub mod kafka_wire;
pub mod kv_keys;
pub mod nats_proto;
pub mod offsets;
pub mod partition;
pub mod pick;
pub mod plan;
pub mod rawjson;
pub mod router;
pub mod scan;
pub mod text;
pub mod views;

/// Return a new time-ordered 26-character message id (ULID layout, Crockford base32).
#[pyfunction]
fn new_id() -> String {
    ids::new_id()
}

/// Return the deterministic id of output `index` of `agent` for input `parent_id`.
#[pyfunction]
fn derive_id(parent_id: &str, agent: &str, index: u64) -> String {
    ids::derive_id(parent_id, agent, index)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(new_id, m)?)?;
    m.add_function(wrap_pyfunction!(derive_id, m)?)?;
    m.add_function(wrap_pyfunction!(codec::encode_headers, m)?)?;
    m.add_function(wrap_pyfunction!(codec::output_headers, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_headers, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_headers_batch, m)?)?;
    m.add_class::<codec::Envelope>()?;
    m.add_class::<cel_eval::CelProgram>()?;
    m.add_class::<router::Router>()?;
    m.add_class::<hotpath::MessagePlan>()?;
    m.add_function(wrap_pyfunction!(router::py_subject_matches, m)?)?;
    m.add_function(wrap_pyfunction!(partition::py_murmur2_partition, m)?)?;
    m.add_class::<kafka_batch::KafkaBatch>()?;
    m.add_function(wrap_pyfunction!(kafka_flush::py_kafka_flush, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_wire::py_kafka_headers, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_wire::py_kafka_header_dict, m)?)?;
    m.add_function(wrap_pyfunction!(nats_proto::py_nats_frames, m)?)?;
    m.add_function(wrap_pyfunction!(nats_proto::py_nats_pub_commands, m)?)?;
    m.add_function(wrap_pyfunction!(partition::py_extract_key, m)?)?;
    m.add_function(wrap_pyfunction!(kv_keys::py_kv_key, m)?)?;
    m.add_class::<dedup::DedupWindow>()?;
    m.add_class::<dedup::RecentIds>()?;
    m.add_class::<dedup::Fingerprints>()?;
    m.add_class::<offsets::PartitionTracker>()?;
    Ok(())
}

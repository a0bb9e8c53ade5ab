//! `agentflow._native`: the Rust hot path of agentflow.
//!
//! Pure-Rust logic lives in the modules (tested with `cargo test`, no Python needed);
//! the `#[pyfunction]`s and `#[pyclass]`es are thin adapters over it.

use pyo3::prelude::*;

pub mod envelope;
pub mod ids;

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
    m.add_function(wrap_pyfunction!(envelope::encode_headers, m)?)?;
    m.add_function(wrap_pyfunction!(envelope::decode_headers, m)?)?;
    m.add_class::<envelope::Envelope>()?;
    Ok(())
}

//! Kafka record headers as the wire wants them: `(name, UTF-8 bytes)` pairs and back.
//!
//! The producer turns every output's header dict into pairs, and the consumer every record's
//! pairs into a dict: a dozen small objects per message, cheaper built here in one call.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Fixed bytes a header costs in a record besides its name and value (varint lengths).
const HEADER_OVERHEAD: usize = 10;

/// UTF-8 bytes of a header value; lone surrogates round-trip as `surrogateescape` does.
fn value_bytes<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let text = value.cast::<PyString>()?;
    match text.to_str() {
        Ok(s) => Ok(PyBytes::new(py, s.as_bytes()).into_any()),
        Err(_) => text.call_method1("encode", ("utf-8", "surrogateescape")),
    }
}

/// Kafka header pairs of a header dict, and an upper bound of the bytes they take in a record.
#[pyfunction]
#[pyo3(name = "kafka_headers")]
pub fn py_kafka_headers<'py>(
    py: Python<'py>,
    headers: &Bound<'py, PyDict>,
) -> PyResult<(Bound<'py, PyList>, usize)> {
    let out = PyList::empty(py);
    let mut size = 0;
    for (name, value) in headers.iter() {
        let name_len = match name.cast::<PyString>()?.to_str() {
            Ok(s) => s.len(),
            Err(_) => 4 * name.len()?, // not valid UTF-8 as is: at most 4 bytes a character
        };
        let bytes = value_bytes(py, &value)?;
        size += name_len + bytes.len()? + HEADER_OVERHEAD;
        out.append(PyTuple::new(py, [name, bytes])?)?;
    }
    Ok((out, size))
}

/// A record's header pairs as text (invalid UTF-8 becomes U+FFFD; a later duplicate wins;
/// a header without a value is left out).
#[pyfunction]
#[pyo3(name = "kafka_header_dict")]
pub fn py_kafka_header_dict<'py>(
    py: Python<'py>,
    pairs: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    if pairs.is_none() {
        return Ok(out);
    }
    for pair in pairs.try_iter()? {
        let pair = pair?;
        // aiokafka gives (str, bytes) tuples: read them as tuples (a generic item lookup
        // boxes the index first: most of this function's time with seven headers).
        let (name, value) = match pair.cast::<PyTuple>() {
            Ok(t) if t.len() == 2 => (t.get_item(0)?, t.get_item(1)?),
            _ => (pair.get_item(0)?, pair.get_item(1)?),
        };
        if value.is_none() {
            continue;
        }
        let bytes = value.cast::<PyBytes>()?;
        let text = String::from_utf8_lossy(bytes.as_bytes());
        out.set_item(name, PyString::new(py, &text))?;
    }
    Ok(out)
}

//! Python face of the envelope codec: `Envelope`, `encode_headers`, `decode_headers(_batch)`.

use crate::cel_eval::py_quote;
use crate::envelope::*;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

fn value_error(err: HeaderError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Decoded `af-*` envelope headers of one message.
#[pyclass(frozen, module = "agentflow._native", name = "Envelope")]
pub struct Envelope {
    data: EnvelopeData,
}

#[pymethods]
impl Envelope {
    #[getter]
    fn message_id(&self) -> Option<String> {
        self.data.message_id.clone()
    }
    #[getter]
    fn key(&self) -> Option<String> {
        self.data.key.clone()
    }
    #[getter]
    fn attempt(&self) -> Option<u64> {
        self.data.attempt
    }
    #[getter]
    fn correlation_id(&self) -> Option<String> {
        self.data.correlation_id.clone()
    }
    #[getter]
    fn causation_id(&self) -> Option<String> {
        self.data.causation_id.clone()
    }
    #[getter]
    fn agent(&self) -> Option<String> {
        self.data.agent.clone()
    }
    #[getter]
    fn ts_ms(&self) -> Option<u64> {
        self.data.ts_ms
    }
    #[getter]
    fn content_type(&self) -> Option<String> {
        self.data.content_type.clone()
    }
    #[getter]
    fn traceparent(&self) -> Option<String> {
        self.data.traceparent.clone()
    }
    #[getter]
    fn tracestate(&self) -> Option<String> {
        self.data.tracestate.clone()
    }
    #[getter]
    fn extra<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.data.extra {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
    fn __repr__(&self) -> String {
        fn opt(v: &Option<String>) -> String {
            v.as_deref().map_or_else(|| "None".to_owned(), py_quote)
        }
        fn num(v: Option<u64>) -> String {
            v.map_or_else(|| "None".to_owned(), |n| n.to_string())
        }
        let d = &self.data;
        let extra: Vec<String> = d
            .extra
            .iter()
            .map(|(k, v)| format!("{}: {}", py_quote(k), py_quote(v)))
            .collect();
        format!(
            "Envelope(message_id={}, key={}, attempt={}, correlation_id={}, causation_id={}, \
             agent={}, ts_ms={}, content_type={}, traceparent={}, tracestate={}, extra={{{}}})",
            opt(&d.message_id),
            opt(&d.key),
            num(d.attempt),
            opt(&d.correlation_id),
            opt(&d.causation_id),
            opt(&d.agent),
            num(d.ts_ms),
            opt(&d.content_type),
            opt(&d.traceparent),
            opt(&d.tracestate),
            extra.join(", ")
        )
    }
}

/// Header name as text (str, or UTF-8 bytes).
fn name_of(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_str()
            .map(str::to_owned)
            .map_err(|_| value_error(HeaderError::InvalidName));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return std::str::from_utf8(b.as_bytes())
            .map(str::to_owned)
            .map_err(|_| value_error(HeaderError::InvalidName));
    }
    Err(PyTypeError::new_err(format!(
        "header name must be str or bytes, not {}",
        type_name(obj)
    )))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

fn push_value(env: &mut EnvelopeData, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let result = if let Ok(s) = value.cast::<PyString>() {
        match s.to_str() {
            Ok(text) => env.push(name, text.as_bytes()),
            Err(_) => Err(HeaderError::InvalidUtf8 {
                name: name.to_owned(),
            }),
        }
    } else if let Ok(b) = value.cast::<PyBytes>() {
        env.push(name, b.as_bytes())
    } else if let Ok(b) = value.cast::<PyByteArray>() {
        env.push(name, &b.to_vec())
    } else if value.is_none() {
        return Ok(()); // Kafka allows a null header value: treat as absent.
    } else {
        return Err(PyTypeError::new_err(format!(
            "header {name}: value must be str or bytes, not {}",
            type_name(value)
        )));
    };
    result.map_err(value_error)
}

fn push_pair(env: &mut EnvelopeData, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let (name, value) = if let Ok(t) = item.cast::<PyTuple>() {
        if t.len() != 2 {
            return Err(PyTypeError::new_err("headers must be (name, value) pairs"));
        }
        (t.get_item(0)?, t.get_item(1)?)
    } else {
        let pair: (Bound<'_, PyAny>, Bound<'_, PyAny>) = item
            .extract()
            .map_err(|_| PyTypeError::new_err("headers must be (name, value) pairs"))?;
        pair
    };
    let name = name_of(&name)?;
    push_value(env, &name, &value)
}

/// Parse one header collection (mapping or sequence of pairs) into an envelope.
pub fn decode_data(headers: &Bound<'_, PyAny>) -> PyResult<EnvelopeData> {
    let mut env = EnvelopeData::default();
    if let Ok(d) = headers.cast::<PyDict>() {
        for (k, v) in d.iter() {
            let name = name_of(&k)?;
            push_value(&mut env, &name, &v)?;
        }
    } else if let Ok(l) = headers.cast::<PyList>() {
        for item in l.iter() {
            push_pair(&mut env, &item)?;
        }
    } else if let Ok(t) = headers.cast::<PyTuple>() {
        for item in t.iter() {
            push_pair(&mut env, &item)?;
        }
    } else if headers.hasattr("items")? {
        for item in headers.call_method0("items")?.try_iter()? {
            push_pair(&mut env, &item?)?;
        }
    } else if headers.is_instance_of::<PyString>() || headers.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "headers must be a mapping or a sequence of (name, value) pairs",
        ));
    } else {
        let iter = headers.try_iter().map_err(|_| {
            PyTypeError::new_err("headers must be a mapping or a sequence of (name, value) pairs")
        })?;
        for item in iter {
            push_pair(&mut env, &item?)?;
        }
    }
    Ok(env)
}

#[pyfunction]
pub fn decode_headers(headers: &Bound<'_, PyAny>) -> PyResult<Envelope> {
    Ok(Envelope {
        data: decode_data(headers)?,
    })
}

/// Decode many header collections; a garbled one yields its `ValueError`/`TypeError` in place.
#[pyfunction]
pub fn decode_headers_batch<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for item in batch.try_iter()? {
        let item = item?;
        match decode_data(&item) {
            Ok(data) => out.append(Bound::new(py, Envelope { data })?)?,
            Err(e)
                if e.is_instance_of::<PyValueError>(py) || e.is_instance_of::<PyTypeError>(py) =>
            {
                out.append(e.into_value(py))?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[pyfunction]
#[pyo3(signature = (message_id, key, attempt, correlation_id, causation_id, agent, ts_ms, content_type, extra=None))]
#[allow(clippy::too_many_arguments)]
pub fn encode_headers<'py>(
    py: Python<'py>,
    message_id: &str,
    key: Option<&str>,
    attempt: u64,
    correlation_id: Option<&str>,
    causation_id: Option<&str>,
    agent: Option<&str>,
    ts_ms: u64,
    content_type: &str,
    extra: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, H_ID), message_id)?;
    if let Some(k) = key {
        d.set_item(intern!(py, H_KEY), k)?;
    }
    d.set_item(intern!(py, H_ATTEMPT), attempt.to_string())?;
    d.set_item(
        intern!(py, H_CORRELATION),
        correlation_id.unwrap_or(message_id),
    )?;
    if let Some(c) = causation_id {
        d.set_item(intern!(py, H_CAUSATION), c)?;
    }
    if let Some(a) = agent {
        d.set_item(intern!(py, H_AGENT), a)?;
    }
    d.set_item(intern!(py, H_TS), ts_ms.to_string())?;
    d.set_item(intern!(py, H_CONTENT_TYPE), content_type)?;
    if let Some(extra) = extra {
        add_extra(py, &d, extra)?;
    }
    Ok(d)
}

/// Copy `extra` (a mapping of str to str) into `d`, skipping the names `encode_headers` owns.
fn add_extra<'py>(
    py: Python<'py>,
    d: &Bound<'py, PyDict>,
    extra: &Bound<'py, PyAny>,
) -> PyResult<()> {
    if extra.is_none() {
        return Ok(());
    }
    let items = if let Ok(e) = extra.cast::<PyDict>() {
        e.items()
    } else {
        extra
            .call_method0("items")?
            .cast_into::<PyList>()
            .or_else(|e| {
                PyList::new(
                    py,
                    e.into_inner().try_iter()?.collect::<PyResult<Vec<_>>>()?,
                )
            })?
    };
    for item in items.iter() {
        let (name, value): (Bound<'py, PyString>, Bound<'py, PyString>) = item
            .extract()
            .map_err(|_| PyTypeError::new_err("extra headers must map str names to str values"))?;
        let name_text = name.to_str()?;
        if OWNED.iter().any(|o| o.eq_ignore_ascii_case(name_text)) {
            continue;
        }
        d.set_item(name, value)?;
    }
    Ok(())
}

/// Headers of output `index` of `agent` for the input `parent_id`: its derived id, attempt 1,
/// the input as causation, `traceparent`/`tracestate` carried over from `trace` (the input's
/// headers), then `extra`. One call per output instead of derive + encode + dict merges.
#[pyfunction]
#[pyo3(signature = (parent_id, agent, index, key, correlation_id, ts_ms, content_type, trace=None, extra=None))]
#[allow(clippy::too_many_arguments)]
pub fn output_headers<'py>(
    py: Python<'py>,
    parent_id: &Bound<'py, PyString>,
    agent: &Bound<'py, PyString>,
    index: u64,
    key: Option<&Bound<'py, PyString>>,
    correlation_id: &Bound<'py, PyString>,
    ts_ms: u64,
    content_type: &Bound<'py, PyString>,
    trace: Option<&Bound<'py, PyAny>>,
    extra: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    // The caller's strings go into the dict as they are (no copy per output); the layout is
    // encode_headers' (attempt 1, the input as causation).
    let out_id = crate::ids::derive_id(parent_id.to_str()?, agent.to_str()?, index);
    let d = PyDict::new(py);
    d.set_item(intern!(py, H_ID), out_id)?;
    if let Some(k) = key {
        d.set_item(intern!(py, H_KEY), k)?;
    }
    d.set_item(intern!(py, H_ATTEMPT), intern!(py, "1"))?;
    d.set_item(intern!(py, H_CORRELATION), correlation_id)?;
    d.set_item(intern!(py, H_CAUSATION), parent_id)?;
    d.set_item(intern!(py, H_AGENT), agent)?;
    d.set_item(intern!(py, H_TS), ts_ms.to_string())?;
    d.set_item(intern!(py, H_CONTENT_TYPE), content_type)?;
    if let Some(trace) = trace.and_then(|t| t.cast::<PyDict>().ok()) {
        if let Some(parent) = trace.get_item(intern!(py, H_TRACEPARENT))? {
            d.set_item(intern!(py, H_TRACEPARENT), parent)?;
            if let Some(state) = trace.get_item(intern!(py, H_TRACESTATE))? {
                d.set_item(intern!(py, H_TRACESTATE), state)?;
            }
        }
    }
    if let Some(extra) = extra {
        add_extra(py, &d, extra)?;
    }
    Ok(d)
}

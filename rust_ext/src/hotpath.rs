//! Python face of the per-message fast path: `MessagePlan` (decode + route + key in one call,
//! and per batch), and the header helpers shared with `Router`/`CelProgram`.

use crate::cel_eval::headers_from_py;
use crate::cel_eval::Compiled;
use crate::codec::decode_data;
use crate::envelope::{
    parse_uint, H_AGENT, H_ATTEMPT, H_CAUSATION, H_CONTENT_TYPE, H_CORRELATION, H_ID, H_KEY,
    H_TRACEPARENT, H_TRACESTATE, H_TS,
};
use crate::pick::{key_at, key_in, KeyValue};
use crate::plan::{Headers, Plan, Selection, View};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Header values as Python objects: the named ones a plan reads, or all of them.
pub enum HeaderObjs<'py> {
    Named(Vec<Option<Bound<'py, PyAny>>>),
    All(Vec<(String, String)>),
}

/// Collect what `plan` reads from a headers mapping (a dict is read by name, anything else
/// in full, with the same errors as a full read).
pub fn header_objs<'py>(plan: &Plan, headers: &Bound<'py, PyAny>) -> PyResult<HeaderObjs<'py>> {
    let reads = &plan.reads().headers;
    if !reads.is_used() {
        return Ok(HeaderObjs::Named(Vec::new()));
    }
    if let (Some(_), Ok(d)) = (reads.fields(), headers.cast::<PyDict>()) {
        let mut out = Vec::with_capacity(plan.header_names().len());
        for name in plan.header_names() {
            out.push(d.get_item(name)?);
        }
        return Ok(HeaderObjs::Named(out));
    }
    Ok(HeaderObjs::All(headers_from_py(headers)?))
}

fn value_str<'b>(name: &str, v: &'b Bound<'_, PyAny>) -> PyResult<&'b str> {
    if let Ok(s) = v.cast::<PyString>() {
        return s.to_str().map_err(|_| {
            PyValueError::new_err(format!("header {name}: value is not valid UTF-8"))
        });
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return std::str::from_utf8(b.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!("header {name}: value is not valid UTF-8"))
        });
    }
    Err(PyTypeError::new_err(format!(
        "header {name}: value must be str or bytes"
    )))
}

/// Evaluate `f` over a borrowed view of one message.
pub fn with_view<R>(
    plan: &Plan,
    payload: &[u8],
    objs: &HeaderObjs<'_>,
    key: Option<&str>,
    topic: &str,
    f: impl FnOnce(&View<'_>) -> R,
) -> PyResult<R> {
    let names = plan.header_names();
    let values: Vec<Option<&str>> = match objs {
        HeaderObjs::Named(items) => items
            .iter()
            .zip(names)
            .map(|(v, name)| v.as_ref().map(|v| value_str(name, v)).transpose())
            .collect::<PyResult<_>>()?,
        HeaderObjs::All(pairs) => names
            .iter()
            .map(|n| {
                pairs
                    .iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            })
            .collect(),
    };
    let headers = match objs {
        HeaderObjs::All(pairs) if names.is_empty() => Headers::All(pairs),
        _ => Headers::Named(&values),
    };
    Ok(f(&View {
        payload,
        headers,
        key,
        topic,
    }))
}

/// Route index for one message (-1: no route matched).
pub fn select_index(
    plan: &Plan,
    payload: &[u8],
    headers: &Bound<'_, PyAny>,
    key: Option<&str>,
    topic: &str,
) -> PyResult<i64> {
    let objs = header_objs(plan, headers)?;
    match with_view(plan, payload, &objs, key, topic, |v| plan.select(v))? {
        Ok(Selection::Route(i)) => Ok(i as i64),
        Ok(Selection::NoMatch) => Ok(-1),
        Err(e) => Err(PyValueError::new_err(e)),
    }
}

/// The envelope fields the runtime needs, as Python objects (the header values themselves
/// when they are `str`: nothing is copied).
pub struct Decoded<'py> {
    pub message_id: Option<Bound<'py, PyAny>>,
    pub key: Option<Bound<'py, PyAny>>,
    pub attempt: Option<u64>,
    pub correlation_id: Option<Bound<'py, PyAny>>,
}

const KNOWN: [&str; 10] = [
    H_ID,
    H_KEY,
    H_ATTEMPT,
    H_CORRELATION,
    H_CAUSATION,
    H_AGENT,
    H_TS,
    H_CONTENT_TYPE,
    H_TRACEPARENT,
    H_TRACESTATE,
];

/// Decode a dict of `str` headers without copying; `None` when anything is unusual (the
/// caller then runs the full decoder, which also produces the exact error).
fn decode_dict<'py>(d: &Bound<'py, PyDict>) -> Option<Decoded<'py>> {
    let mut out = Decoded {
        message_id: None,
        key: None,
        attempt: None,
        correlation_id: None,
    };
    for (k, v) in d.iter() {
        let name = k.cast::<PyString>().ok()?.to_str().ok()?;
        let value = v.cast::<PyString>().ok()?;
        let text = value.to_str().ok()?;
        let Some(known) = KNOWN.iter().find(|n| n.eq_ignore_ascii_case(name)) else {
            continue;
        };
        match *known {
            H_ID => out.message_id = Some(v),
            H_KEY => out.key = Some(v),
            H_CORRELATION => out.correlation_id = Some(v),
            H_ATTEMPT => out.attempt = Some(parse_uint(text)?),
            H_TS => {
                parse_uint(text)?;
            }
            _ => {}
        }
    }
    Some(out)
}

/// Decode one header collection (any shape `decode_headers` takes).
pub fn decode_fast<'py>(py: Python<'py>, headers: &Bound<'py, PyAny>) -> PyResult<Decoded<'py>> {
    if let Ok(d) = headers.cast::<PyDict>() {
        if let Some(found) = decode_dict(d) {
            return Ok(found);
        }
    }
    let data = decode_data(headers)?;
    let s = |v: Option<String>| v.map(|t| PyString::new(py, &t).into_any());
    Ok(Decoded {
        message_id: s(data.message_id),
        key: s(data.key),
        attempt: data.attempt,
        correlation_id: s(data.correlation_id),
    })
}

fn opt_any<'py>(py: Python<'py>, v: Option<Bound<'py, PyAny>>) -> Bound<'py, PyAny> {
    v.unwrap_or_else(|| py.None().into_bound(py))
}

fn decoded_tuple<'py>(py: Python<'py>, d: Decoded<'py>) -> PyResult<Bound<'py, PyTuple>> {
    let attempt = match d.attempt {
        Some(a) => a.into_pyobject(py)?.into_any(),
        None => py.None().into_bound(py),
    };
    PyTuple::new(
        py,
        [
            opt_any(py, d.message_id),
            opt_any(py, d.key),
            attempt,
            opt_any(py, d.correlation_id),
        ],
    )
}

/// Decode + route + idempotency key for one message, compiled once per agent.
#[pyclass(frozen, module = "agentflow._native", name = "MessagePlan")]
pub struct MessagePlan {
    plan: Plan,
    key_path: Option<Vec<String>>,
    /// Where the key path's first member is in the plan's picked set.
    key_slot: Option<usize>,
}

fn key_obj<'py>(py: Python<'py>, value: KeyValue<'_>) -> Bound<'py, PyAny> {
    match value {
        KeyValue::Missing => py.None().into_bound(py),
        KeyValue::Text(t) => PyString::new(py, &t).into_any(),
        KeyValue::Raw(r) => PyBytes::new(py, r.as_bytes()).into_any(),
    }
}

fn invalid_json(payload: &[u8]) -> PyErr {
    let e = serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .err()
        .map_or_else(|| "invalid".to_owned(), |e| e.to_string());
    PyValueError::new_err(format!("payload is not valid JSON: {e}"))
}

impl MessagePlan {
    fn key_value<'py>(&self, py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let Some(path) = &self.key_path else {
            return Ok(py.None().into_bound(py));
        };
        key_at(payload, path)
            .map(|v| key_obj(py, v))
            .map_err(|_| invalid_json(payload))
    }

    fn process_one<'py>(
        &self,
        py: Python<'py>,
        headers: &Bound<'py, PyAny>,
        payload: &[u8],
        key: Option<&str>,
        topic: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let decoded = decode_fast(py, headers)?;
        let header_key = match (&key, &decoded.key) {
            (None, Some(k)) => Some(k.cast::<PyString>()?.to_str()?),
            _ => None,
        };
        let route_key = key.or(header_key);
        let plan = &self.plan;
        let (route, member) = if plan.is_empty() && self.key_path.is_none() {
            (Selection::NoMatch, None)
        } else {
            let objs = header_objs(plan, headers)?;
            // The member comes back as a span of `payload` (the view's borrow ends here).
            let base = payload.as_ptr() as usize;
            let (route, span) = with_view(plan, payload, &objs, route_key, topic, |v| {
                plan.select_with(v, self.key_slot).map(|(route, member)| {
                    let span = member.map(|m| m.map(|r| (r.as_ptr() as usize - base, r.len())));
                    (route, span)
                })
            })?
            .map_err(PyValueError::new_err)?;
            let member = span
                .map(|m| m.and_then(|(at, len)| std::str::from_utf8(&payload[at..at + len]).ok()));
            (route, member)
        };
        let route: i64 = match route {
            Selection::Route(i) => i as i64,
            Selection::NoMatch => -1,
        };
        let idem = match (&self.key_path, member) {
            (None, _) => py.None().into_bound(py),
            (Some(path), Some(raw)) => key_obj(py, key_in(raw, &path[1..])),
            (Some(_), None) => self.key_value(py, payload)?,
        };
        let attempt = match decoded.attempt {
            Some(a) => a.into_pyobject(py)?.into_any(),
            None => py.None().into_bound(py),
        };
        PyTuple::new(
            py,
            [
                opt_any(py, decoded.message_id),
                opt_any(py, decoded.key),
                attempt,
                opt_any(py, decoded.correlation_id),
                route.into_pyobject(py)?.into_any(),
                idem,
            ],
        )
    }
}

fn is_input_error(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyValueError>(py) || e.is_instance_of::<PyTypeError>(py)
}

#[pymethods]
impl MessagePlan {
    #[new]
    #[pyo3(signature = (routes=None, key_path=None, cache_size=1024, fast_path=true))]
    fn new(
        routes: Option<&Bound<'_, PyAny>>,
        key_path: Option<&str>,
        cache_size: usize,
        fast_path: bool,
    ) -> PyResult<Self> {
        let conditions = match routes {
            Some(r) => crate::router::conditions_from_py(r)?,
            None => Vec::new(),
        };
        let key_path: Option<Vec<String>> = match key_path {
            None => None,
            Some(p) => {
                let p = p.strip_prefix("payload.").unwrap_or(p);
                if p.is_empty() || p.split('.').any(str::is_empty) {
                    return Err(PyValueError::new_err(format!(
                        "key_path must be a dotted field path, got {}",
                        crate::text::py_quote_short(p, 200)
                    )));
                }
                Some(p.split('.').map(str::to_owned).collect())
            }
        };
        let compiled = conditions
            .iter()
            .enumerate()
            .map(|(i, cond)| {
                cond.as_deref()
                    .map(|expr| Compiled::new(expr).map_err(|e| format!("route {i}: {e}")))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(PyValueError::new_err)?;
        let first: Vec<String> = key_path.iter().map(|p| p[0].clone()).collect();
        let mut plan = Plan::with_fields(compiled, cache_size, &first);
        plan.set_fast(fast_path);
        let key_slot = first.first().and_then(|f| plan.field_slot(f));
        Ok(MessagePlan {
            plan,
            key_path,
            key_slot,
        })
    }

    /// (message_id, key, attempt, correlation_id) from the headers.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        headers: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        decoded_tuple(py, decode_fast(py, headers)?)
    }

    /// `decode` for many header collections; a garbled one yields its exception in place.
    fn decode_batch<'py>(
        &self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for item in batch.try_iter()? {
            match decode_fast(py, &item?).and_then(|d| decoded_tuple(py, d)) {
                Ok(t) => out.append(t)?,
                Err(e) if is_input_error(py, &e) => out.append(e.into_value(py))?,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The idempotency key at `key_path`: str (strings, integers), bytes (raw JSON of any
    /// other value), None (missing or null, or no key path).
    fn key_of<'py>(&self, py: Python<'py>, payload: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.key_value(py, payload)
    }

    #[pyo3(signature = (payload, headers, key, topic))]
    fn select(
        &self,
        payload: &[u8],
        headers: &Bound<'_, PyAny>,
        key: Option<&str>,
        topic: &str,
    ) -> PyResult<i64> {
        select_index(&self.plan, payload, headers, key, topic)
    }

    #[pyo3(signature = (headers, payload, key, topic))]
    fn process<'py>(
        &self,
        py: Python<'py>,
        headers: &Bound<'py, PyAny>,
        payload: &[u8],
        key: Option<&str>,
        topic: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        self.process_one(py, headers, payload, key, topic)
    }

    /// `process` over (headers, payload, key, topic) tuples; a bad message yields its
    /// exception in place.
    fn process_batch<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for item in messages.try_iter()? {
            let item = item?;
            let result = (|| {
                let (headers, payload, key, topic): (
                    Bound<'py, PyAny>,
                    Bound<'py, PyBytes>,
                    Option<Bound<'py, PyString>>,
                    Bound<'py, PyString>,
                ) = item.extract().map_err(|_| {
                    PyTypeError::new_err("messages must be (headers, payload, key, topic) tuples")
                })?;
                let key = key.as_ref().map(|k| k.to_str()).transpose()?;
                self.process_one(py, &headers, payload.as_bytes(), key, topic.to_str()?)
            })();
            match result {
                Ok(t) => out.append(t)?,
                Err(e) if is_input_error(py, &e) => out.append(e.into_value(py))?,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn __len__(&self) -> usize {
        self.plan.len()
    }

    /// How many condition evaluations the fast evaluator has decided (without the
    /// interpreter) since the plan was made.
    #[getter]
    fn fast_decisions(&self) -> u64 {
        self.plan.fast_decided()
    }

    /// How many of the conditions the fast evaluator covers (0 when it is off).
    #[getter]
    fn fast_routes(&self) -> usize {
        if self.plan.fast_enabled() {
            self.plan.fast_count()
        } else {
            0
        }
    }
}

//! CEL conditions (the `cel` crate) evaluated over a message: `payload` (parsed JSON),
//! `headers` (map of str), `key` (str or null) and `topic` (str).

use cel::common::ast::IdedExpr;
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use cel::objects::Key;
use cel::{Context, Env, Program, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use crate::hotpath::{header_objs, with_view};
use crate::plan::Plan;

pub use crate::cel_compile::{compile, MAX_DEPTH, MAX_SOURCE_LEN};
pub use crate::text::{py_quote, py_quote_short, shorten};

/// The variables a program can see.
pub const VARIABLES: [&str; 4] = ["payload", "headers", "key", "topic"];

static ENV: OnceLock<Arc<Env>> = OnceLock::new();

pub(crate) fn env() -> &'static Arc<Env> {
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// Which message parts a program reads (so unused ones are never parsed or converted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub payload: bool,
    pub headers: bool,
    pub key: bool,
    pub topic: bool,
}

impl Needs {
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            payload: self.payload || other.payload,
            headers: self.headers || other.headers,
            key: self.key || other.key,
            topic: self.topic || other.topic,
        }
    }
}

/// One compiled CEL expression.
#[derive(Debug)]
pub struct Compiled {
    pub source: String,
    program: Program,
    pub needs: Needs,
}

impl Compiled {
    /// Compile `source`; a syntax error comes back as a message with its line and column.
    ///
    /// Parsing (recursive in the crate) runs on a helper thread with a large stack, and
    /// programs nesting deeper than [`MAX_DEPTH`] are refused, so neither compiling nor
    /// evaluating (also recursive) can overflow the caller's stack.
    pub fn new(source: &str) -> Result<Compiled, String> {
        let (program, needs) = compile(source)?;
        Ok(Compiled {
            source: source.to_owned(),
            program,
            needs,
        })
    }

    /// Variables the expression references (sorted).
    pub fn variables(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .program
            .references()
            .variables()
            .into_iter()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// The parsed expression (for static analysis).
    pub fn expression(&self) -> &IdedExpr {
        self.program.expression()
    }

    /// Evaluate a condition: `Ok(Ok(b))` for a bool, `Ok(Err(type name))` for another value.
    /// The result is read in place (no conversion to an owned `Value`).
    pub fn execute_bool(&self, ctx: &Context<'_, '_>) -> Result<Result<bool, String>, String> {
        let run = || -> Result<Result<bool, String>, cel::ExecutionError> {
            let v = Value::resolve_val(self.program.expression(), ctx)?;
            Ok(match v.downcast_ref::<CelBool>() {
                Some(b) => Ok(*b.inner()),
                None => Err(v.get_type().name().to_owned()),
            })
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!(
                "CEL expression {} failed: {}",
                py_quote_short(&self.source, 200),
                shorten(&e.to_string(), 500)
            )),
            Err(_) => Err(format!(
                "CEL expression {} failed: internal error in the interpreter",
                py_quote_short(&self.source, 200)
            )),
        }
    }

    /// Evaluate against a prepared context.
    pub fn execute(&self, ctx: &Context<'_, '_>) -> Result<Value, String> {
        match catch_unwind(AssertUnwindSafe(|| self.program.execute(ctx))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!(
                "CEL expression {} failed: {}",
                py_quote_short(&self.source, 200),
                shorten(&e.to_string(), 500)
            )),
            Err(_) => Err(format!(
                "CEL expression {} failed: internal error in the interpreter",
                py_quote_short(&self.source, 200)
            )),
        }
    }
}

/// Parse a raw JSON payload.
pub fn parse_json(payload: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(payload).map_err(|e| format!("payload is not valid JSON: {e}"))
}

fn number(n: &serde_json::Number) -> Box<dyn Val> {
    if let Some(i) = n.as_i64() {
        Box::new(CelInt::from(i))
    } else if let Some(u) = n.as_u64() {
        Box::new(CelUInt::from(u))
    } else {
        let f = n
            .as_f64()
            .unwrap_or_else(|| n.as_str().parse().unwrap_or(f64::NAN));
        Box::new(CelDouble::from(f))
    }
}

/// Convert parsed JSON into CEL values, borrowing its strings.
pub fn json_to_val(j: &Json) -> Box<dyn Val + '_> {
    match j {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => number(n),
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(a) => Box::new(CelList::from(a.iter().map(json_to_val).collect::<Vec<_>>())),
        Json::Object(o) => Box::new(CelMap::from(
            o.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// Name of a CEL value's type, for error messages.
pub fn type_name(v: &Value) -> String {
    v.type_of().to_string()
}

/// Convert a CEL result to Python.
pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items.iter() {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(m) => {
            let dict = PyDict::new(py);
            for (k, item) in m.map.iter() {
                let key = match k {
                    Key::Int(i) => i.into_pyobject(py)?.into_any(),
                    Key::Uint(u) => u.into_pyobject(py)?.into_any(),
                    Key::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
                    Key::String(s) => PyString::new(py, s).into_any(),
                };
                dict.set_item(key, value_to_py(py, item)?)?;
            }
            dict.into_any()
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "CEL result of type {} cannot be converted to Python",
                type_name(other)
            )))
        }
    })
}

/// Read a `Mapping[str, str]` of headers (values may also be UTF-8 bytes).
pub fn headers_from_py(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut push = |k: Bound<'_, PyAny>, v: Bound<'_, PyAny>| -> PyResult<()> {
        let name: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("header names must be str"))?;
        let value = if let Ok(b) = v.cast::<PyBytes>() {
            std::str::from_utf8(b.as_bytes())
                .map_err(|_| {
                    PyValueError::new_err(format!("header {name}: value is not valid UTF-8"))
                })?
                .to_owned()
        } else {
            v.extract::<String>().map_err(|_| {
                PyTypeError::new_err(format!("header {name}: value must be str or bytes"))
            })?
        };
        out.push((name, value));
        Ok(())
    };
    if let Ok(d) = headers.cast::<PyDict>() {
        for (k, v) in d.iter() {
            push(k, v)?;
        }
    } else if headers.is_none() {
    } else {
        // A mapping, or (Kafka style) a list/tuple of (name, value) pairs.
        let items = if headers.is_instance_of::<PyList>() || headers.is_instance_of::<PyTuple>() {
            headers.clone()
        } else {
            headers
                .call_method0("items")
                .map_err(|_| PyTypeError::new_err("headers must be a mapping of str to str"))?
        };
        for item in items.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            push(k, v)?;
        }
    }
    Ok(out)
}

/// A compiled CEL expression over `payload`, `headers`, `key` and `topic`.
#[pyclass(frozen, module = "agentflow._native", name = "CelProgram")]
pub struct CelProgram {
    plan: Plan,
}

impl CelProgram {
    fn compiled(&self) -> &Compiled {
        self.plan.first().expect("a CelProgram holds one program")
    }
}

#[pymethods]
impl CelProgram {
    #[new]
    fn new(expr: &str) -> PyResult<Self> {
        Compiled::new(expr)
            .map(|compiled| CelProgram {
                plan: Plan::from_compiled(vec![Some(compiled)], 0),
            })
            .map_err(PyValueError::new_err)
    }

    #[getter]
    fn expression(&self) -> &str {
        &self.compiled().source
    }

    fn variables(&self) -> Vec<String> {
        self.compiled().variables()
    }

    #[pyo3(signature = (payload, headers, key, topic))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        payload: &[u8],
        headers: &Bound<'py, PyAny>,
        key: Option<&str>,
        topic: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let objs = header_objs(&self.plan, headers)?;
        let value = with_view(&self.plan, payload, &objs, key, topic, |v| {
            self.plan.evaluate(v)
        })?
        .map_err(PyValueError::new_err)?;
        value_to_py(py, &value)
    }

    fn __repr__(&self) -> String {
        format!("CelProgram({})", py_quote(&self.compiled().source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Headers, View};

    fn eval(expr: &str, payload: &str) -> Result<Value, String> {
        let plan = Plan::from_compiled(vec![Some(Compiled::new(expr)?)], 0);
        let headers = vec![("x-tenant".to_owned(), "acme".to_owned())];
        plan.evaluate(&View {
            payload: payload.as_bytes(),
            headers: Headers::All(&headers),
            key: Some("k1"),
            topic: "tickets.new",
        })
    }

    #[test]
    fn evaluates_over_all_variables() {
        let p = r#"{"priority": "high", "n": 3, "tags": ["a", "b"], "c": {"id": 7}}"#;
        assert_eq!(
            eval(r#"payload.priority == "high""#, p),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("payload.n + 1", p), Ok(Value::Int(4)));
        assert_eq!(eval("size(payload.tags)", p), Ok(Value::Int(2)));
        assert_eq!(eval("payload.c.id", p), Ok(Value::Int(7)));
        assert_eq!(eval(r#"headers["x-tenant"]"#, p), Ok(Value::from("acme")));
        assert_eq!(
            eval(r#"key == "k1" && topic.startsWith("tickets.")"#, p),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval(r#"has(payload.missing)"#, p), Ok(Value::Bool(false)));
        assert_eq!(
            eval(r#"payload.tags.exists(t, t == "b")"#, p),
            Ok(Value::Bool(true))
        );
    }

    #[test]
    fn errors_are_messages() {
        let err = eval("payload.missing == 1", "{}").unwrap_err();
        assert!(err.contains("payload.missing"), "{err}");
        let err = Compiled::new("payload.a ==").unwrap_err();
        assert!(err.contains("<input>:1:"), "{err}");
        assert!(err.contains("| payload.a ==\n| ............^"), "{err}");
        for deep in [
            format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000)),
            format!("1{}", "+1".repeat(30_000)),
            format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000)),
        ] {
            let err = Compiled::new(&deep).unwrap_err();
            assert!(err.len() < 2000, "{}", err.len());
        }
        assert!(Compiled::new(&format!("1{}", "+1".repeat(90))).is_ok());
        // Long `!`/`-` runs fold in the parser: harmless, whatever the outcome.
        for long_unary in [
            format!("{}true", "!".repeat(60_001)),
            format!("{}1", "-".repeat(60_001)),
        ] {
            if let Err(e) = Compiled::new(&long_unary) {
                assert!(e.len() < 2000);
            }
        }
        let err = Compiled::new(&"1".repeat(MAX_SOURCE_LEN + 1)).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        assert!(parse_json(b"{nope").is_err());
    }

    #[test]
    fn needs_follow_references() {
        let c = Compiled::new(r#"headers["a"] == "b""#).unwrap();
        assert_eq!(
            c.needs,
            Needs {
                headers: true,
                ..Needs::default()
            }
        );
        let c = Compiled::new("[1, 2].exists(x, payload.a == x)").unwrap();
        assert!(c.needs.payload);
        assert!(Compiled::new("has(payload.a)").unwrap().needs.payload);
    }
}

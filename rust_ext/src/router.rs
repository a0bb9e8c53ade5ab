//! Routing: first-match CEL route selection and NATS-style subject matching.

use crate::cel_eval::{
    context, headers_from_py, payload_if_needed, py_quote_short, type_name, Compiled, Message,
    Needs,
};
use cel::Value;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// NATS subject matching: tokens split on `.`; `*` matches exactly one token and `>` (as the
/// last token) one or more trailing tokens. Wildcards count only as whole tokens; a pattern or
/// subject with an empty token (`a..b`, leading or trailing `.`) never matches.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(p) = pattern_tokens.next() {
        if p.is_empty() {
            return false;
        }
        if p == ">" && pattern_tokens.peek().is_none() {
            // One or more remaining tokens, none of them empty.
            let mut any = false;
            for s in subject_tokens {
                if s.is_empty() {
                    return false;
                }
                any = true;
            }
            return any;
        }
        match subject_tokens.next() {
            Some(s) if !s.is_empty() && (p == "*" || p == s) => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Outcome of evaluating the routes in order.
#[derive(Debug, PartialEq)]
pub enum Selection {
    Route(usize),
    NoMatch,
}

/// Ordered routes: `None` is a default route that always matches.
pub struct Routes {
    routes: Vec<Option<Compiled>>,
    needs: Needs,
}

impl Routes {
    pub fn new<'a>(
        conditions: impl IntoIterator<Item = Option<&'a str>>,
    ) -> Result<Routes, String> {
        let mut routes = Vec::new();
        let mut needs = Needs::default();
        let mut reachable = true;
        for (i, cond) in conditions.into_iter().enumerate() {
            match cond {
                Some(expr) => {
                    let compiled = Compiled::new(expr).map_err(|e| format!("route {i}: {e}"))?;
                    if reachable {
                        needs = needs.union(compiled.needs);
                    }
                    routes.push(Some(compiled));
                }
                None => {
                    reachable = false;
                    routes.push(None);
                }
            }
        }
        Ok(Routes { routes, needs })
    }

    /// Message parts the reachable routes read.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Index of the first route whose condition is true (a default route always is).
    pub fn select(&self, msg: Message<'_>) -> Result<Selection, String> {
        let ctx = context(msg, self.needs);
        for (i, route) in self.routes.iter().enumerate() {
            let Some(compiled) = route else {
                return Ok(Selection::Route(i));
            };
            match compiled.execute(&ctx) {
                Ok(Value::Bool(true)) => return Ok(Selection::Route(i)),
                Ok(Value::Bool(false)) => {}
                Ok(other) => {
                    return Err(format!(
                        "route {i} ({}): condition must be a bool, got {}",
                        py_quote_short(&compiled.source, 200),
                        type_name(&other)
                    ))
                }
                Err(e) => return Err(format!("route {i}: {e}")),
            }
        }
        Ok(Selection::NoMatch)
    }
}

/// First-match router over CEL conditions (one per route; `None` = default route).
#[pyclass(frozen, module = "agentflow._native", name = "Router")]
pub struct Router {
    routes: Routes,
}

#[pymethods]
impl Router {
    #[new]
    fn new(routes: &Bound<'_, PyAny>) -> PyResult<Self> {
        if routes.is_instance_of::<pyo3::types::PyString>() {
            return Err(PyTypeError::new_err(
                "routes must be a sequence of str or None, not str",
            ));
        }
        let mut conditions: Vec<Option<String>> = Vec::new();
        for item in routes.try_iter()? {
            let item = item?;
            if item.is_none() {
                conditions.push(None);
            } else {
                let expr: String = item.extract().map_err(|_| {
                    PyTypeError::new_err("each route condition must be a str or None")
                })?;
                conditions.push(Some(expr));
            }
        }
        Routes::new(conditions.iter().map(|c| c.as_deref()))
            .map(|routes| Router { routes })
            .map_err(PyValueError::new_err)
    }

    #[pyo3(signature = (payload, headers, key, topic))]
    fn select(
        &self,
        payload: &[u8],
        headers: &Bound<'_, PyAny>,
        key: Option<&str>,
        topic: &str,
    ) -> PyResult<i64> {
        let needs = self.routes.needs();
        let json = payload_if_needed(payload, needs)?;
        let hdrs = if needs.headers {
            headers_from_py(headers)?
        } else {
            Vec::new()
        };
        let msg = Message {
            payload: json.as_ref(),
            headers: &hdrs,
            key,
            topic,
        };
        match self.routes.select(msg).map_err(PyValueError::new_err)? {
            Selection::Route(i) => Ok(i as i64),
            Selection::NoMatch => Ok(-1),
        }
    }

    fn __len__(&self) -> usize {
        self.routes.len()
    }
}

/// Whether `subject` matches the NATS-style `pattern` (`*` one token, `>` one or more trailing).
#[pyfunction]
#[pyo3(name = "subject_matches")]
pub fn py_subject_matches(pattern: &str, subject: &str) -> bool {
    subject_matches(pattern, subject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel_eval::parse_json;

    #[test]
    fn subjects() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.*", "a"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches("a.>", "a.b"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches(">", "a"));
        assert!(subject_matches("*.b.>", "x.b.y.z"));
        assert!(!subject_matches("a.>.c", "a.b.c")); // `>` not last: literal
        assert!(subject_matches("a.>.c", "a.>.c"));
        assert!(!subject_matches("a*", "ab"));
        assert!(!subject_matches("a..b", "a..b"));
        assert!(!subject_matches("a.b", "a.b."));
        assert!(!subject_matches("a.>", "a.b."));
        assert!(!subject_matches("", ""));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn first_match_wins() {
        let routes = Routes::new([
            Some(r#"payload.priority == "high""#),
            Some(r#"topic == "t""#),
            None,
            Some("payload.nope"),
        ])
        .unwrap();
        assert!(routes.needs().payload && routes.needs().topic && !routes.needs().headers);
        let hi = parse_json(br#"{"priority": "high"}"#).unwrap();
        let lo = parse_json(br#"{"priority": "low"}"#).unwrap();
        let msg = |p, topic| Message {
            payload: Some(p),
            headers: &[],
            key: None,
            topic,
        };
        assert_eq!(routes.select(msg(&hi, "x")), Ok(Selection::Route(0)));
        assert_eq!(routes.select(msg(&lo, "t")), Ok(Selection::Route(1)));
        assert_eq!(routes.select(msg(&lo, "x")), Ok(Selection::Route(2)));
    }

    #[test]
    fn errors_name_the_route() {
        let routes = Routes::new([Some("payload.n"), None]).unwrap();
        let p = parse_json(br#"{"n": 1}"#).unwrap();
        let msg = Message {
            payload: Some(&p),
            headers: &[],
            key: None,
            topic: "t",
        };
        let err = routes.select(msg).unwrap_err();
        assert!(
            err.starts_with("route 0 ('payload.n'): condition must be a bool"),
            "{err}"
        );
        assert!(Routes::new([None, Some("(")])
            .err()
            .unwrap()
            .starts_with("route 1: invalid"));
        assert_eq!(Routes::new([]).unwrap().select(msg), Ok(Selection::NoMatch));
    }
}

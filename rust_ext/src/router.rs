//! Routing: first-match CEL route selection and NATS-style subject matching.

use crate::hotpath::select_index;
use crate::plan::Plan;
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

/// Read a sequence of route conditions (`str`, or `None` for a default route).
pub fn conditions_from_py(routes: &Bound<'_, PyAny>) -> PyResult<Vec<Option<String>>> {
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
            let expr: String = item
                .extract()
                .map_err(|_| PyTypeError::new_err("each route condition must be a str or None"))?;
            conditions.push(Some(expr));
        }
    }
    Ok(conditions)
}

/// First-match router over CEL conditions (one per route; `None` = default route).
#[pyclass(frozen, module = "agentflow._native", name = "Router")]
pub struct Router {
    plan: Plan,
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (routes, cache_size=1024))]
    fn new(routes: &Bound<'_, PyAny>, cache_size: usize) -> PyResult<Self> {
        let conditions = conditions_from_py(routes)?;
        Plan::new(conditions.iter().map(|c| c.as_deref()), cache_size)
            .map(|plan| Router { plan })
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
        select_index(&self.plan, payload, headers, key, topic)
    }

    fn __len__(&self) -> usize {
        self.plan.len()
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
}

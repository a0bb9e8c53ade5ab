//! Lazy CEL views of one message: nothing is converted until a condition reads it.
//!
//! Used when the conditions read named payload members and headers only ([`crate::access`]).
//! A [`Vars`] is the context's variable resolver: `payload.amount` resolves in one step to the
//! member (the crate tries the most specific name first), `payload`/`headers` resolve to
//! read-only map views whose look-ups convert one member on demand.

use crate::cel_eval::json_to_val;
use crate::pick::{parse_container, scalar_val};
use cel::common::traits::Indexer;
use cel::common::types::{CelNull, CelString, Type, MAP_TYPE};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::ExecutionError;
use serde_json::Value as Json;
use std::sync::OnceLock;

static MAP: Type = MAP_TYPE;

/// Picked payload members (raw text), converted on access.
#[derive(Debug, Clone, Copy)]
pub struct PayloadView<'a> {
    pub names: &'a [String],
    pub raws: &'a [Option<&'a str>],
    /// Parsed arrays/objects, filled on first access.
    pub containers: &'a [OnceLock<Option<Json>>],
}

impl<'a> PayloadView<'a> {
    fn member(&self, name: &str) -> Option<Box<dyn Val + 'a>> {
        let i = self.names.iter().position(|n| n == name)?;
        let raw: &'a str = self.raws[i]?;
        let containers: &'a [OnceLock<Option<Json>>] = self.containers;
        Some(match scalar_val(raw) {
            Some(v) => v,
            None => match containers[i].get_or_init(|| parse_container(raw)) {
                Some(json) => json_to_val(json),
                None => Box::new(CelNull),
            },
        })
    }
}

/// Named header values.
#[derive(Debug, Clone, Copy)]
pub struct HeadersView<'a> {
    pub names: &'a [String],
    pub values: &'a [Option<&'a str>],
}

impl<'a> HeadersView<'a> {
    fn member(&self, name: &str) -> Option<Box<dyn Val + 'a>> {
        let i = self.names.iter().position(|n| n == name)?;
        let value: &'a str = self.values.get(i).copied().flatten()?;
        Some(Box::new(CelString::from(value)))
    }
}

fn index_name(idx: &dyn Val) -> Result<&str, ExecutionError> {
    idx.downcast_ref::<CelString>()
        .map(CelString::inner)
        .ok_or_else(|| ExecutionError::no_such_key("key"))
}

macro_rules! map_view {
    ($ty:ident) => {
        impl<'a> Val for $ty<'a> {
            fn get_type(&self) -> &Type {
                &MAP
            }
            fn cel_type() -> &'static Type {
                &MAP
            }
            fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }
            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
            where
                Self: 'v,
            {
                Box::new(*self)
            }
        }

        impl<'a> Indexer for $ty<'a> {
            fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
            where
                Self: 'v,
            {
                let name = index_name(idx)?;
                match self.member(name) {
                    Some(v) => Ok(CowVal::Owned(v)),
                    None => Err(ExecutionError::no_such_key(name)),
                }
            }

            fn steal<'v>(
                self: Box<Self>,
                idx: &dyn Val,
            ) -> Result<Box<dyn Val + 'v>, ExecutionError>
            where
                Self: 'v,
            {
                self.get(idx).map(CowVal::into_owned)
            }
        }
    };
}

map_view!(PayloadView);
map_view!(HeadersView);

/// The message variables, resolved on demand.
#[derive(Debug)]
pub struct Vars<'a> {
    pub payload: Option<PayloadView<'a>>,
    pub headers: Option<HeadersView<'a>>,
    /// `key` when read: `Some(None)` binds null.
    pub key: Option<Option<&'a str>>,
    pub topic: Option<&'a str>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        // `payload.a.b` is member `b` of member `a`, never a member named "a.b": answer
        // one level only and let the interpreter select further.
        if let Some(field) = variable.strip_prefix("payload.") {
            if field.contains('.') {
                return None;
            }
            return self.payload.as_ref()?.member(field).map(CowVal::Owned);
        }
        if let Some(field) = variable.strip_prefix("headers.") {
            if field.contains('.') {
                return None;
            }
            return self.headers.as_ref()?.member(field).map(CowVal::Owned);
        }
        match variable {
            "payload" => self
                .payload
                .as_ref()
                .map(|v| CowVal::Borrowed(v as &dyn Val)),
            "headers" => self
                .headers
                .as_ref()
                .map(|v| CowVal::Borrowed(v as &dyn Val)),
            "key" => self.key.map(|k| match k {
                Some(k) => CowVal::owned(CelString::from(k)),
                None => CowVal::owned(CelNull),
            }),
            "topic" => self.topic.map(|t| CowVal::owned(CelString::from(t))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::{Headers, Plan, Selection, View};

    fn select(plan: &Plan, payload: &str, region: Option<&str>) -> Result<Selection, String> {
        let values = [region];
        plan.select(&View {
            payload: payload.as_bytes(),
            headers: Headers::Named(&values),
            key: Some("k"),
            topic: "t",
        })
    }

    #[test]
    fn members_resolve_lazily_and_exactly() {
        let plan = Plan::new(
            [
                Some(r#"payload["a.b"] == 1 && headers["x"] == "y""#),
                Some("payload.a.b == 2 && has(payload.c)"),
                Some(r#"payload.l[1] == "z" && key == "k" && topic == "t""#),
                None,
            ],
            0,
        )
        .unwrap();
        assert_eq!(
            select(&plan, r#"{"a.b": 1, "a": {"b": 2}}"#, Some("y")),
            Ok(Selection::Route(0))
        );
        assert_eq!(
            select(&plan, r#"{"a.b": 0, "a": {"b": 2}, "c": null}"#, Some("n")),
            Ok(Selection::Route(1))
        );
        assert_eq!(
            select(
                &plan,
                r#"{"a.b": 0, "a": {"b": 3}, "l": ["y", "z"]}"#,
                Some("n")
            ),
            Ok(Selection::Route(2))
        );
        let err = select(&plan, r#"{"a.b": 0, "a": {"b": 3}}"#, Some("n")).unwrap_err();
        assert!(err.starts_with("route 2:"), "{err}");
        assert!(Plan::new([None, Some("(")], 0)
            .err()
            .unwrap()
            .starts_with("route 1: invalid"));
    }
}

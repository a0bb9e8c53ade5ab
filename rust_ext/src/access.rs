//! What a compiled CEL program reads from a message, found by walking its AST once.
//!
//! `payload.a`, `has(payload.a)`, `payload["a"]` (and the same on `headers`) read one named
//! entry; any other use of the variable (`size(payload)`, `payload[i]`, `payload == {...}`,
//! passing it to a function, a comprehension variable shadowing it) reads all of it. Knowing
//! the entries lets the evaluator convert only those, and makes a condition's result a pure
//! function of a few byte strings (which is what the decision cache keys on).

use cel::common::ast::operators;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

/// How a message variable (`payload` or `headers`) is read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Access {
    /// Not at all.
    #[default]
    Unused,
    /// Only these entries, by name (sorted, unique).
    Fields(Vec<String>),
    /// As a whole.
    Whole,
}

impl Access {
    /// Also read `field`.
    pub fn add(&mut self, field: &str) {
        match self {
            Access::Whole => {}
            Access::Unused => *self = Access::Fields(vec![field.to_owned()]),
            Access::Fields(fields) => {
                if let Err(at) = fields.binary_search_by(|f| f.as_str().cmp(field)) {
                    fields.insert(at, field.to_owned());
                }
            }
        }
    }

    /// Both reads together.
    pub fn union(&self, other: &Access) -> Access {
        match (self, other) {
            (Access::Whole, _) | (_, Access::Whole) => Access::Whole,
            (Access::Unused, x) | (x, Access::Unused) => x.clone(),
            (Access::Fields(a), Access::Fields(_)) => {
                let mut out = Access::Fields(a.clone());
                if let Access::Fields(b) = other {
                    for f in b {
                        out.add(f);
                    }
                }
                out
            }
        }
    }

    pub fn is_used(&self) -> bool {
        !matches!(self, Access::Unused)
    }

    /// The entries read, when only some are.
    pub fn fields(&self) -> Option<&[String]> {
        match self {
            Access::Fields(f) => Some(f),
            _ => None,
        }
    }
}

/// Everything a program reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reads {
    pub payload: Access,
    pub headers: Access,
    pub key: bool,
    pub topic: bool,
}

impl Reads {
    pub fn union(&self, other: &Reads) -> Reads {
        Reads {
            payload: self.payload.union(&other.payload),
            headers: self.headers.union(&other.headers),
            key: self.key || other.key,
            topic: self.topic || other.topic,
        }
    }

    fn var(&mut self, name: &str) -> Option<&mut Access> {
        match name {
            "payload" => Some(&mut self.payload),
            "headers" => Some(&mut self.headers),
            _ => None,
        }
    }

    /// A plain identifier: the variable as a whole.
    fn ident(&mut self, name: &str) {
        match name {
            "key" => self.key = true,
            "topic" => self.topic = true,
            other => {
                if let Some(access) = self.var(other) {
                    *access = Access::Whole;
                }
            }
        }
    }
}

/// `payload`/`headers` read through one named entry: (variable, entry).
fn named_entry(node: &IdedExpr) -> Option<(&str, &str)> {
    match &node.expr {
        Expr::Select(sel) => match &sel.operand.expr {
            Expr::Ident(var) => Some((var.as_str(), sel.field.as_str())),
            _ => None,
        },
        Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
            match (
                call.args.first().map(|a| &a.expr),
                call.args.get(1).map(|a| &a.expr),
            ) {
                (Some(Expr::Ident(var)), Some(Expr::Literal(LiteralValue::String(s)))) => {
                    Some((var.as_str(), s.inner()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// What the expression rooted at `root` reads (walked without recursion).
pub fn reads(root: &IdedExpr) -> Reads {
    let mut out = Reads::default();
    let mut todo: Vec<&IdedExpr> = vec![root];
    while let Some(node) = todo.pop() {
        if let Some((var, field)) = named_entry(node) {
            if let Some(access) = out.var(var) {
                access.add(field);
                continue;
            }
        }
        match &node.expr {
            Expr::Ident(name) => out.ident(name),
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    todo.push(t);
                }
                todo.extend(call.args.iter());
            }
            Expr::Comprehension(c) => {
                // A loop variable named like a message variable shadows it: give up on
                // tracking that variable precisely.
                let bound = [Some(&c.iter_var), c.iter_var2.as_ref(), Some(&c.accu_var)];
                for name in bound.into_iter().flatten() {
                    out.ident(name);
                }
                todo.extend([
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]);
            }
            Expr::List(l) => todo.extend(l.elements.iter()),
            Expr::Map(m) => {
                for entry in &m.entries {
                    push_entry(&mut todo, &entry.expr);
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    push_entry(&mut todo, &entry.expr);
                }
            }
            Expr::Select(sel) => todo.push(&sel.operand),
            Expr::Unspecified | Expr::Literal(_) => {}
        }
    }
    out
}

fn push_entry<'a>(todo: &mut Vec<&'a IdedExpr>, entry: &'a EntryExpr) {
    match entry {
        EntryExpr::StructField(f) => todo.push(&f.value),
        EntryExpr::MapEntry(m) => {
            todo.push(&m.key);
            todo.push(&m.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::Env;

    fn of(src: &str) -> Reads {
        reads(Env::stdlib().compile(src).unwrap().expression())
    }

    fn fields(names: &[&str]) -> Access {
        Access::Fields(names.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn named_fields_are_tracked() {
        let r = of(r#"payload.amount > 1000 && payload.currency == "EUR""#);
        assert_eq!(r.payload, fields(&["amount", "currency"]));
        assert_eq!(r.headers, Access::Unused);
        assert!(!r.key && !r.topic);
        let r = of(r#""vip" in payload.tags && has(payload.c.d) && payload["x-y"] == 1"#);
        assert_eq!(r.payload, fields(&["c", "tags", "x-y"]));
        let r = of(r#"headers["x-region"] == "eu" && key == topic"#);
        assert_eq!(r.headers, fields(&["x-region"]));
        assert!(r.key && r.topic);
        assert_eq!(of("payload.a.b.c == 1").payload, fields(&["a"]));
        assert_eq!(
            of("payload.tags.exists(t, t == payload.x)").payload,
            fields(&["tags", "x"])
        );
    }

    #[test]
    fn other_uses_read_the_whole_variable() {
        for src in [
            "size(payload) > 0",
            "payload[0] == 1",
            r#"payload == {"a": 1}"#,
            "'a' in payload",
            "payload.?a.orValue(1) == 1",
            "[1].exists(payload, payload == 1)",
            "payload.map(k, k).size() > 0",
            r#"payload[headers["h"]] == 1"#,
        ] {
            assert_eq!(of(src).payload, Access::Whole, "{src}");
        }
        assert_eq!(of("size(headers) > 1").headers, Access::Whole);
        assert_eq!(of(r#"headers[key] == "x""#).headers, Access::Whole);
    }

    #[test]
    fn union_merges() {
        let a = fields(&["a", "c"]);
        assert_eq!(a.union(&fields(&["b"])), fields(&["a", "b", "c"]));
        assert_eq!(a.union(&Access::Unused), a);
        assert_eq!(a.union(&Access::Whole), Access::Whole);
    }
}

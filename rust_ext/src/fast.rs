//! A specialised evaluator for the common subset of CEL conditions, compiled from the `cel`
//! crate's parsed AST and evaluated straight over the raw JSON members the plan picked.
//!
//! The `cel` crate stays the parser and the reference semantics: this evaluator only answers
//! when it is sure to give the interpreter's answer, and says "don't know" (`None`) otherwise
//! — a missing member, a type mismatch, an error that `&&`/`||` might absorb, a NaN
//! comparison, anything not covered. The caller then runs the interpreter on the same message,
//! which produces the value or the exact error message. So a condition outside the subset, or
//! a message on which the subset would have to raise, costs what it did before; everything
//! else skips the interpreter.
//!
//! The subset: `payload.f`, `payload["f"]`, `headers["h"]`, `headers.h`, `key`, `topic`,
//! `x.f` / `x["f"]` on a JSON object, scalar literals and lists of them, `== != < <= > >=`
//! (with the crate's int/uint/double comparisons), `&& || !`, `in` (lists, JSON arrays, JSON
//! objects by string key), `size()`, `has()`, `startsWith`/`endsWith`/`contains`.

use crate::pick::string_of;
use crate::rawjson::{member, Elements, Members};
use cel::common::ast::operators;
use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use std::borrow::Cow;
use std::cmp::Ordering;

/// A scalar literal of the expression.
#[derive(Debug, Clone)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
}

/// One compiled node.
#[derive(Debug)]
pub enum Node {
    Lit(Lit),
    List(Vec<Lit>),
    /// A top-level payload member (slot in the plan's picked fields).
    Payload(usize),
    /// A header (slot in the plan's header names).
    Header(usize),
    HasPayload(usize),
    HasHeader(usize),
    Key,
    Topic,
    Select(Box<Node>, String),
    Has(Box<Node>, String),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Eq(Box<Node>, Box<Node>),
    Ne(Box<Node>, Box<Node>),
    Cmp(Box<Node>, Box<Node>, CmpOp),
    In(Box<Node>, Box<Node>),
    Size(Box<Node>),
    Str(Box<Node>, Box<Node>, StrOp),
}

#[derive(Debug, Clone, Copy)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy)]
pub enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

/// A value during evaluation (containers stay raw, already-validated JSON text).
#[derive(Debug, Clone)]
pub enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'a, str>),
    RawList(&'a str),
    RawMap(&'a str),
    Lits(&'a [Lit]),
}

/// What a message offers to the evaluator.
pub struct Input<'a, 'b> {
    /// Raw text of the picked payload members (`None`: absent).
    pub payload: &'b [Option<&'a str>],
    /// Values of the named headers (`None`: absent).
    pub headers: &'b [Option<&'a str>],
    pub key: Option<&'a str>,
    pub topic: &'a str,
}

/// Compile `expr`; `None` when it is outside the subset. `payload_slot`/`header_slot` map a
/// member name to its slot (`None`: not picked, so not compilable).
pub fn compile(
    expr: &IdedExpr,
    payload_slot: &dyn Fn(&str) -> Option<usize>,
    header_slot: &dyn Fn(&str) -> Option<usize>,
) -> Option<Node> {
    let c = |e: &IdedExpr| compile(e, payload_slot, header_slot).map(Box::new);
    // A named entry of a message variable.
    let entry = |var: &IdedExpr, field: &str, has: bool| -> Option<Option<Node>> {
        match &var.expr {
            Expr::Ident(name) if name == "payload" => Some(payload_slot(field).map(|s| {
                if has {
                    Node::HasPayload(s)
                } else {
                    Node::Payload(s)
                }
            })),
            Expr::Ident(name) if name == "headers" => Some(header_slot(field).map(|s| {
                if has {
                    Node::HasHeader(s)
                } else {
                    Node::Header(s)
                }
            })),
            _ => None,
        }
    };
    Some(match &expr.expr {
        Expr::Literal(lit) => Node::Lit(literal(lit)?),
        Expr::Ident(name) => match name.as_str() {
            "key" => Node::Key,
            "topic" => Node::Topic,
            _ => return None,
        },
        Expr::List(list) => {
            if !list.optional_indices.is_empty() {
                return None;
            }
            let mut items = Vec::with_capacity(list.elements.len());
            for e in &list.elements {
                match &e.expr {
                    Expr::Literal(l) => items.push(literal(l)?),
                    _ => return None,
                }
            }
            Node::List(items)
        }
        Expr::Select(sel) => {
            if let Some(named) = entry(&sel.operand, &sel.field, sel.test) {
                return named;
            }
            let operand = c(&sel.operand)?;
            if sel.test {
                Node::Has(operand, sel.field.clone())
            } else {
                Node::Select(operand, sel.field.clone())
            }
        }
        Expr::Call(call) => {
            let name = call.func_name.as_str();
            match (call.target.as_deref(), call.args.as_slice()) {
                (None, [a, b]) if name == operators::INDEX => {
                    let Expr::Literal(LiteralValue::String(field)) = &b.expr else {
                        return None;
                    };
                    if let Some(named) = entry(a, field.inner(), false) {
                        return named;
                    }
                    Node::Select(c(a)?, field.inner().to_owned())
                }
                (None, [a, b]) => {
                    let (a, b) = (c(a)?, c(b)?);
                    match name {
                        operators::LOGICAL_AND => Node::And(a, b),
                        operators::LOGICAL_OR => Node::Or(a, b),
                        operators::EQUALS => Node::Eq(a, b),
                        operators::NOT_EQUALS => Node::Ne(a, b),
                        operators::LESS => Node::Cmp(a, b, CmpOp::Lt),
                        operators::LESS_EQUALS => Node::Cmp(a, b, CmpOp::Le),
                        operators::GREATER => Node::Cmp(a, b, CmpOp::Gt),
                        operators::GREATER_EQUALS => Node::Cmp(a, b, CmpOp::Ge),
                        operators::IN => Node::In(a, b),
                        _ => return None,
                    }
                }
                (None, [a]) => match name {
                    operators::LOGICAL_NOT => Node::Not(c(a)?),
                    "size" => Node::Size(c(a)?),
                    _ => return None,
                },
                (Some(t), []) if name == "size" => Node::Size(c(t)?),
                (Some(t), [a]) => {
                    let op = match name {
                        "startsWith" => StrOp::StartsWith,
                        "endsWith" => StrOp::EndsWith,
                        "contains" => StrOp::Contains,
                        _ => return None,
                    };
                    Node::Str(c(t)?, c(a)?, op)
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn literal(lit: &LiteralValue) -> Option<Lit> {
    Some(match lit {
        LiteralValue::Null => Lit::Null,
        LiteralValue::Boolean(b) => Lit::Bool(*b.inner()),
        LiteralValue::Int(i) => Lit::Int(*i.inner()),
        LiteralValue::UInt(u) => Lit::UInt(*u.inner()),
        LiteralValue::Double(d) => Lit::Double(*d.inner()),
        LiteralValue::String(s) => Lit::Str(s.inner().to_owned()),
        LiteralValue::Bytes(_) => return None,
    })
}

fn lit_val(l: &Lit) -> V<'_> {
    match l {
        Lit::Null => V::Null,
        Lit::Bool(b) => V::Bool(*b),
        Lit::Int(i) => V::Int(*i),
        Lit::UInt(u) => V::UInt(*u),
        Lit::Double(d) => V::Double(*d),
        Lit::Str(s) => V::Str(Cow::Borrowed(s)),
    }
}

/// Raw (validated) JSON text as a value, with the same number rules as the interpreter's
/// conversion: int when it fits i64, else uint when it fits u64, else double.
pub fn raw_val(raw: &str) -> V<'_> {
    match raw.as_bytes().first() {
        Some(b'"') => V::Str(string_of(raw)),
        Some(b't') => V::Bool(true),
        Some(b'f') => V::Bool(false),
        Some(b'n') => V::Null,
        Some(b'[') => V::RawList(raw),
        Some(b'{') => V::RawMap(raw),
        _ => {
            if let Ok(i) = raw.parse::<i64>() {
                V::Int(i)
            } else if let Ok(u) = raw.parse::<u64>() {
                V::UInt(u)
            } else {
                V::Double(raw.parse::<f64>().unwrap_or(f64::NAN))
            }
        }
    }
}

/// Evaluate; `None`: not sure (the caller asks the interpreter).
pub fn eval<'a>(node: &'a Node, input: &Input<'a, '_>) -> Option<V<'a>> {
    Some(match node {
        Node::Lit(l) => lit_val(l),
        Node::List(items) => V::Lits(items),
        Node::Payload(slot) => raw_val((*input.payload.get(*slot)?)?),
        Node::Header(slot) => V::Str(Cow::Borrowed((*input.headers.get(*slot)?)?)),
        Node::HasPayload(slot) => V::Bool(input.payload.get(*slot)?.is_some()),
        Node::HasHeader(slot) => V::Bool(input.headers.get(*slot)?.is_some()),
        Node::Key => match input.key {
            Some(k) => V::Str(Cow::Borrowed(k)),
            None => V::Null,
        },
        Node::Topic => V::Str(Cow::Borrowed(input.topic)),
        Node::Select(operand, field) => match eval(operand, input)? {
            V::RawMap(raw) => raw_val(member(raw, field)?),
            _ => return None,
        },
        Node::Has(operand, field) => match eval(operand, input)? {
            V::RawMap(raw) => V::Bool(member(raw, field).is_some()),
            _ => return None,
        },
        Node::Not(a) => match eval(a, input)? {
            V::Bool(b) => V::Bool(!b),
            _ => return None,
        },
        Node::And(a, b) => match eval(a, input)? {
            V::Bool(false) => V::Bool(false),
            V::Bool(true) => match eval(b, input)? {
                V::Bool(r) => V::Bool(r),
                _ => return None,
            },
            _ => return None,
        },
        Node::Or(a, b) => match eval(a, input)? {
            V::Bool(true) => V::Bool(true),
            V::Bool(false) => match eval(b, input)? {
                V::Bool(r) => V::Bool(r),
                _ => return None,
            },
            _ => return None,
        },
        Node::Eq(a, b) => V::Bool(equals(&eval(a, input)?, &eval(b, input)?)?),
        Node::Ne(a, b) => V::Bool(!equals(&eval(a, input)?, &eval(b, input)?)?),
        Node::Cmp(a, b, op) => {
            let ord = compare(&eval(a, input)?, &eval(b, input)?)?;
            V::Bool(match op {
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            })
        }
        Node::In(a, b) => {
            let needle = eval(a, input)?;
            match eval(b, input)? {
                V::Lits(items) => {
                    let mut found = false;
                    for l in items {
                        if equals(&lit_val(l), &needle)? {
                            found = true;
                            break;
                        }
                    }
                    V::Bool(found)
                }
                V::RawList(raw) => {
                    let mut found = false;
                    for item in Elements::new(raw) {
                        if equals(&raw_val(item), &needle)? {
                            found = true;
                            break;
                        }
                    }
                    V::Bool(found)
                }
                V::RawMap(raw) => match needle {
                    V::Str(s) => V::Bool(member(raw, &s).is_some()),
                    _ => return None,
                },
                _ => return None,
            }
        }
        Node::Size(a) => V::Int(match eval(a, input)? {
            V::Str(s) => s.chars().count() as i64,
            V::Lits(items) => items.len() as i64,
            V::RawList(raw) => Elements::new(raw).count() as i64,
            V::RawMap(raw) => {
                let mut keys: Vec<Cow<'_, str>> = Members::new(raw).map(|(k, _)| k).collect();
                keys.sort();
                keys.dedup();
                keys.len() as i64
            }
            _ => return None,
        }),
        Node::Str(a, b, op) => match (eval(a, input)?, eval(b, input)?) {
            (V::Str(s), V::Str(t)) => V::Bool(match op {
                StrOp::StartsWith => s.starts_with(&*t),
                StrOp::EndsWith => s.ends_with(&*t),
                StrOp::Contains => s.contains(&*t),
            }),
            _ => return None,
        },
    })
}

/// The interpreter's `==` on two values (`None`: containers, not decided here).
fn equals(a: &V<'_>, b: &V<'_>) -> Option<bool> {
    if is_container(a) || is_container(b) {
        return None;
    }
    Some(match (a, b) {
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        _ => match numeric_cmp(a, b) {
            // Different kinds are unequal; NaN is unequal to everything.
            Some(ord) => ord == Some(Ordering::Equal),
            None => false,
        },
    })
}

fn is_container(v: &V<'_>) -> bool {
    matches!(v, V::RawList(_) | V::RawMap(_) | V::Lits(_))
}

/// Ordering of two numbers as the interpreter compares them: `None` when not both numbers,
/// `Some(None)` when not comparable (NaN).
fn numeric_cmp(a: &V<'_>, b: &V<'_>) -> Option<Option<Ordering>> {
    Some(match (a, b) {
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::UInt(x), V::UInt(y)) => Some(x.cmp(y)),
        (V::Int(x), V::UInt(y)) => Some(u64::try_from(*x).map_or(Ordering::Less, |x| x.cmp(y))),
        (V::UInt(x), V::Int(y)) => Some(i64::try_from(*x).map_or(Ordering::Greater, |x| x.cmp(y))),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y),
        (V::Int(x), V::Double(y)) => (*x as f64).partial_cmp(y),
        (V::UInt(x), V::Double(y)) => (*x as f64).partial_cmp(y),
        (V::Double(x), V::Int(y)) => x.partial_cmp(&(*y as f64)),
        (V::Double(x), V::UInt(y)) => x.partial_cmp(&(*y as f64)),
        _ => return None,
    })
}

/// The interpreter's ordering (`None`: an error there, e.g. different kinds or NaN).
fn compare(a: &V<'_>, b: &V<'_>) -> Option<Ordering> {
    match (a, b) {
        (V::Str(x), V::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        _ => numeric_cmp(a, b)?,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::Env;

    #[test]
    fn walks_validated_json() {
        let raw = r#"{ "a" : [1, "x,]", {"b": 2}] , "c":{"d":"e\"}"}, "a": 3 }"#;
        let names: Vec<_> = Members::new(raw).map(|(k, _)| k.into_owned()).collect();
        assert_eq!(names, ["a", "c", "a"]);
        assert_eq!(member(raw, "a"), Some("3"));
        assert_eq!(member(raw, "c"), Some(r#"{"d":"e\"}"}"#));
        let items: Vec<_> = Elements::new(r#"[1, "x,]", {"b": [2]} , []]"#).collect();
        assert_eq!(items, ["1", r#""x,]""#, r#"{"b": [2]}"#, "[]"]);
        assert_eq!(Elements::new("[ ]").count(), 0);
        assert_eq!(Members::new("{ }").count(), 0);
    }

    #[test]
    fn compiles_the_subset_only() {
        let slot = |f: &str| ["a", "tags"].iter().position(|x| *x == f);
        let hslot = |f: &str| ["x-region"].iter().position(|x| *x == f);
        for (src, ok) in [
            (r#"payload.a == "x" && headers["x-region"] != "eu""#, true),
            (r#""vip" in payload.tags || size(payload.tags) > 2"#, true),
            (r#"has(payload.a) && payload.a.b.startsWith("q")"#, true),
            ("payload.a + 1 == 2", false),
            ("payload.zz == 1", false),
            ("payload.tags.exists(t, t == 1)", false),
            ("payload.a == b\"x\"", false),
        ] {
            let p = Env::stdlib().compile(src).unwrap();
            assert_eq!(
                compile(p.expression(), &slot, &hslot).is_some(),
                ok,
                "{src}"
            );
        }
    }
}

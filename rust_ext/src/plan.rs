//! Evaluating compiled conditions over one message, converting only what they read.
//!
//! A [`Plan`] is a list of conditions (routes; `None` is a default route) analysed once: which
//! payload members and headers each reads ([`crate::access`]). Per message, the payload is
//! validated and only those members are kept (as raw text, [`crate::pick`]); one CEL context
//! holding just them is built on first need and shared by every condition; conditions whose
//! reads are bounded consult their [`DecisionCache`] first.

use crate::access::{reads, Access, Reads};
use crate::cache::{DecisionCache, KeyBuf, Lookup};
use crate::cel_eval::{env, json_to_val, py_quote_short, Compiled};
use crate::fast::{self, Node};
use crate::pick::pick;
use crate::scan::scan;
use crate::views::{HeadersView, PayloadView, Vars};
use cel::common::types::{CelMap, CelMapKey, CelString};
use cel::common::value::Val;
use cel::{Context, Value};
use serde_json::Value as Json;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

/// Default decision-cache entries per condition.
pub const DEFAULT_CACHE: usize = 1024;

/// One compiled condition and what it reads.
pub struct Condition {
    pub compiled: Compiled,
    pub reads: Reads,
    /// Positions of its payload members in `Plan::payload_fields`.
    payload_slots: Vec<usize>,
    /// Positions of its headers in `Plan::header_names`.
    header_slots: Vec<usize>,
    cache: Option<DecisionCache>,
    /// The condition compiled for the fast evaluator, when it is in its subset.
    fast: Option<Node>,
}

/// Outcome of evaluating routes in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    Route(usize),
    NoMatch,
}

/// Where a message's headers come from.
#[derive(Debug, Clone, Copy)]
pub enum Headers<'a> {
    /// Values of `Plan::header_names`, in that order (enough unless some condition reads
    /// `headers` as a whole).
    Named(&'a [Option<&'a str>]),
    /// Every header (later duplicates win).
    All(&'a [(String, String)]),
}

/// One message, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub payload: &'a [u8],
    pub headers: Headers<'a>,
    pub key: Option<&'a str>,
    pub topic: &'a str,
}

/// Ordered conditions over messages.
pub struct Plan {
    routes: Vec<Option<Condition>>,
    /// What the reachable conditions read, together.
    reads: Reads,
    payload_fields: Vec<String>,
    header_names: Vec<String>,
    /// Whether conditions in the fast evaluator's subset skip the interpreter.
    fast: bool,
    /// Conditions the fast evaluator decided (for tests and benchmarks).
    fast_decided: AtomicU64,
}

fn slots(access: &Access, all: &[String]) -> Vec<usize> {
    access
        .fields()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| all.iter().position(|a| a == f))
        .collect()
}

impl Plan {
    /// Compile the conditions; `cache_size` decision-cache entries per condition (0 = none).
    pub fn new<'a>(
        conditions: impl IntoIterator<Item = Option<&'a str>>,
        cache_size: usize,
    ) -> Result<Plan, String> {
        let compiled = conditions
            .into_iter()
            .enumerate()
            .map(|(i, cond)| {
                cond.map(|expr| Compiled::new(expr).map_err(|e| format!("route {i}: {e}")))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan::from_compiled(compiled, cache_size))
    }

    /// A plan over programs already compiled.
    pub fn from_compiled(conditions: Vec<Option<Compiled>>, cache_size: usize) -> Plan {
        Plan::with_fields(conditions, cache_size, &[])
    }

    /// A plan that also picks the top-level payload members `extra` (read with
    /// [`Plan::select_with`] in the same pass over the payload).
    pub fn with_fields(
        conditions: Vec<Option<Compiled>>,
        cache_size: usize,
        extra: &[String],
    ) -> Plan {
        let mut analysed = Vec::with_capacity(conditions.len());
        let mut union = Reads::default();
        let mut reachable = true;
        for cond in conditions {
            match cond {
                Some(c) => {
                    let r = reads(c.expression());
                    if reachable {
                        union = union.union(&r);
                    }
                    analysed.push(Some((c, r)));
                }
                None => {
                    reachable = false;
                    analysed.push(None);
                }
            }
        }
        if !matches!(union.payload, Access::Whole) {
            for field in extra {
                union.payload.add(field);
            }
        }
        let payload_fields = union.payload.fields().unwrap_or_default().to_vec();
        let header_names = union.headers.fields().unwrap_or_default().to_vec();
        let bounded =
            |a: &Access, u: &Access| !matches!(a, Access::Whole) && !matches!(u, Access::Whole);
        let routes = analysed
            .into_iter()
            .map(|entry| {
                entry.map(|(compiled, reads)| {
                    let cacheable = cache_size > 0
                        && bounded(&reads.payload, &union.payload)
                        && bounded(&reads.headers, &union.headers);
                    let fast = fast::compile(
                        compiled.expression(),
                        &|f| payload_fields.iter().position(|a| a == f),
                        &|h| header_names.iter().position(|a| a == h),
                    );
                    Condition {
                        fast,
                        payload_slots: slots(&reads.payload, &payload_fields),
                        header_slots: slots(&reads.headers, &header_names),
                        cache: cacheable.then(|| DecisionCache::new(cache_size)),
                        compiled,
                        reads,
                    }
                })
            })
            .collect();
        Plan {
            routes,
            reads: union,
            payload_fields,
            header_names,
            fast: true,
            fast_decided: AtomicU64::new(0),
        }
    }

    /// Turn the fast evaluator on or off (off: every condition is interpreted).
    pub fn set_fast(&mut self, on: bool) {
        self.fast = on;
    }

    /// How many conditions the fast evaluator has decided so far.
    pub fn fast_decided(&self) -> u64 {
        self.fast_decided.load(AtomicOrdering::Relaxed)
    }

    pub fn fast_enabled(&self) -> bool {
        self.fast
    }

    /// How many conditions the fast evaluator covers.
    pub fn fast_count(&self) -> usize {
        self.routes
            .iter()
            .flatten()
            .filter(|c| c.fast.is_some())
            .count()
    }

    /// The first condition's program.
    pub fn first(&self) -> Option<&Compiled> {
        self.routes
            .first()
            .and_then(|r| r.as_ref())
            .map(|c| &c.compiled)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Header names to look up for [`Headers::Named`] (empty when `headers` is read whole).
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// Index of the first route whose condition holds (a default route always does).
    pub fn select(&self, view: &View<'_>) -> Result<Selection, String> {
        self.select_with(view, None).map(|(s, _)| s)
    }

    /// Position of a top-level payload member in the picked set (see [`Plan::with_fields`]).
    pub fn field_slot(&self, name: &str) -> Option<usize> {
        self.payload_fields.iter().position(|f| f == name)
    }

    /// [`Plan::select`], also returning the raw text of the picked member at `slot`:
    /// `Some(None)` when absent, `None` when the payload was not picked member by member
    /// (read whole, or not an object).
    pub fn select_with<'a>(
        &self,
        view: &View<'a>,
        slot: Option<usize>,
    ) -> Result<(Selection, Option<Option<&'a str>>), String> {
        let prep = Prepared::new(self, view)?;
        let member = match (&prep.picked, slot) {
            (Picked::Fields(raws), Some(i)) => Some(raws.get(i).copied().flatten()),
            _ => None,
        };
        self.run(&prep).map(|s| (s, member))
    }

    fn run(&self, prep: &Prepared<'_, '_>) -> Result<Selection, String> {
        let vars: OnceCell<Vars<'_>> = OnceCell::new();
        let ctx: OnceCell<Context<'_, '_>> = OnceCell::new();
        let mut buf = KeyBuf::default();
        let input = fast::Input {
            payload: match &prep.picked {
                Picked::Fields(raws) => raws,
                _ => &[],
            },
            headers: match prep.view.headers {
                Headers::Named(values) => values,
                Headers::All(_) => &[],
            },
            key: prep.view.key,
            topic: prep.view.topic,
        };
        for (i, route) in self.routes.iter().enumerate() {
            let Some(cond) = route else {
                return Ok(Selection::Route(i));
            };
            if let (true, Some(node)) = (self.fast, &cond.fast) {
                if let Some(fast::V::Bool(b)) = fast::eval(node, &input) {
                    self.fast_decided.fetch_add(1, AtomicOrdering::Relaxed);
                    if b {
                        return Ok(Selection::Route(i));
                    }
                    continue;
                }
            }
            buf.clear();
            let mut store: Option<&[u8]> = None;
            if let Some(cache) = &cond.cache {
                if prep.projection(cond, &mut buf) {
                    if let Some(key) = buf.bytes() {
                        match cache.get(key) {
                            Lookup::Hit(true) => return Ok(Selection::Route(i)),
                            Lookup::Hit(false) => continue,
                            Lookup::Miss => store = Some(key),
                            Lookup::Off => {}
                        }
                    }
                }
            }
            let ctx = ctx.get_or_init(|| prep.context(vars.get_or_init(|| prep.vars())));
            match cond.compiled.execute_bool(ctx) {
                Ok(Ok(b)) => {
                    if let (Some(cache), Some(key)) = (&cond.cache, store) {
                        cache.insert(key, b);
                    }
                    if b {
                        return Ok(Selection::Route(i));
                    }
                }
                Ok(Err(type_name)) => {
                    return Err(format!(
                        "route {i} ({}): condition must be a bool, got {type_name}",
                        py_quote_short(&cond.compiled.source, 200)
                    ))
                }
                Err(e) => return Err(format!("route {i}: {e}")),
            }
        }
        Ok(Selection::NoMatch)
    }

    /// Value of the first condition (a plan made of one expression).
    pub fn evaluate(&self, view: &View<'_>) -> Result<Value, String> {
        let Some(Some(cond)) = self.routes.first() else {
            return Ok(Value::Null);
        };
        let prep = Prepared::new(self, view)?;
        let vars = prep.vars();
        let ctx = prep.context(&vars);
        cond.compiled.execute(&ctx)
    }
}

/// The payload as the conditions need it.
enum Picked<'a> {
    Unused,
    /// Raw members, aligned with `Plan::payload_fields`.
    Fields(Vec<Option<&'a str>>),
    /// The whole document (read whole, or not an object).
    Whole(Json),
}

/// One message prepared for evaluation.
struct Prepared<'p, 'a> {
    plan: &'p Plan,
    view: &'p View<'a>,
    picked: Picked<'a>,
    /// Parsed array/object members, aligned with `Plan::payload_fields`, filled on access.
    containers: OnceCell<Vec<OnceLock<Option<Json>>>>,
}

fn parse_whole(payload: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(payload).map_err(|e| format!("payload is not valid JSON: {e}"))
}

impl<'p, 'a> Prepared<'p, 'a> {
    /// Validate and pick the payload when the plan reads it (invalid JSON is an error even
    /// if the first route would not have looked at it, as with a full parse).
    fn new(plan: &'p Plan, view: &'p View<'a>) -> Result<Self, String> {
        let picked = match &plan.reads.payload {
            Access::Unused => Picked::Unused,
            Access::Whole => Picked::Whole(parse_whole(view.payload)?),
            Access::Fields(fields) => {
                match scan(view.payload, fields).or_else(|| pick(view.payload, fields)) {
                    Some(raws) => Picked::Fields(raws),
                    None => Picked::Whole(parse_whole(view.payload)?),
                }
            }
        };
        Ok(Prepared {
            plan,
            view,
            picked,
            containers: OnceCell::new(),
        })
    }

    /// The bytes `cond` reads; false when they cannot be named (payload not an object, or
    /// all headers given rather than named ones).
    fn projection(&self, cond: &Condition, buf: &mut KeyBuf) -> bool {
        if cond.reads.payload.is_used() {
            let Picked::Fields(raws) = &self.picked else {
                return false;
            };
            for &slot in &cond.payload_slots {
                buf.part(raws[slot].map(|r| r.as_bytes()));
            }
        }
        if cond.reads.headers.is_used() {
            let Headers::Named(values) = self.view.headers else {
                return false;
            };
            for &slot in &cond.header_slots {
                buf.part(values.get(slot).copied().flatten().map(str::as_bytes));
            }
        }
        if cond.reads.key {
            buf.part(self.view.key.map(str::as_bytes));
        }
        if cond.reads.topic {
            buf.part(Some(self.view.topic.as_bytes()));
        }
        true
    }

    /// The lazily converted variables the plan reads.
    fn vars(&self) -> Vars<'_> {
        let reads = &self.plan.reads;
        Vars {
            payload: match &self.picked {
                Picked::Fields(raws) => Some(PayloadView {
                    names: &self.plan.payload_fields,
                    raws,
                    containers: self
                        .containers
                        .get_or_init(|| raws.iter().map(|_| OnceLock::new()).collect()),
                }),
                _ => None,
            },
            headers: match self.view.headers {
                Headers::Named(values) if reads.headers.is_used() => Some(HeadersView {
                    names: &self.plan.header_names,
                    values,
                }),
                _ => None,
            },
            key: reads.key.then_some(self.view.key),
            topic: reads.topic.then_some(self.view.topic),
        }
    }

    /// A context resolving through `vars`, plus what is read whole (converted up front).
    fn context<'c>(&'c self, vars: &'c Vars<'c>) -> Context<'c, 'c> {
        let mut ctx = Context::with_env(Arc::clone(env()));
        ctx.set_variable_resolver(vars);
        if let Picked::Whole(json) = &self.picked {
            ctx.add_variable_as_val("payload", json_to_val(json));
        }
        if let (Headers::All(pairs), true) = (self.view.headers, self.plan.reads.headers.is_used())
        {
            let map: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = pairs
                .iter()
                .map(|(name, value)| {
                    let v: Box<dyn Val + '_> = Box::new(CelString::from(value.as_str()));
                    (CelMapKey::from(name.as_str()), v)
                })
                .collect();
            ctx.add_variable_as_val("headers", Box::new(CelMap::from(map)));
        }
        ctx
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

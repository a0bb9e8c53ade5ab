//! Compiling CEL safely: the crate's parser, AST walks and drops are recursive, so parsing
//! runs on a helper thread with a large stack and programs nested too deeply are refused.

use crate::cel_eval::{env, Needs};
use crate::text::py_quote_short;
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::Program;

/// Longest accepted expression source, in bytes.
pub const MAX_SOURCE_LEN: usize = 64 * 1024;
/// Deepest accepted expression tree (parenthesised and chained operators, macros). Evaluation
/// recurses about 1.3 KiB of stack per level, so this keeps it well inside small thread stacks.
pub const MAX_DEPTH: usize = 100;
const COMPILE_STACK: usize = 256 * 1024 * 1024;

/// Depth of an expression tree, walked without recursion.
fn depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut todo: Vec<(&IdedExpr, usize)> = vec![(root, 1)];
    while let Some((node, d)) = todo.pop() {
        deepest = deepest.max(d);
        let d = d + 1;
        match &node.expr {
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    todo.push((t, d));
                }
                todo.extend(call.args.iter().map(|a| (a, d)));
            }
            Expr::Comprehension(c) => {
                for e in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    todo.push((e, d));
                }
            }
            Expr::List(l) => todo.extend(l.elements.iter().map(|e| (e, d))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    push_entry(&mut todo, &entry.expr, d);
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    push_entry(&mut todo, &entry.expr, d);
                }
            }
            Expr::Select(sel) => todo.push((&sel.operand, d)),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    deepest
}

fn push_entry<'a>(todo: &mut Vec<(&'a IdedExpr, usize)>, entry: &'a EntryExpr, d: usize) {
    match entry {
        EntryExpr::StructField(f) => todo.push((&f.value, d)),
        EntryExpr::MapEntry(m) => {
            todo.push((&m.key, d));
            todo.push((&m.value, d));
        }
    }
}

/// Parse, check depth and collect references (run on the big-stack compiler thread, where a
/// too-deep program is also dropped: dropping is recursive too).
fn compile_checked(source: &str) -> Result<(Program, Needs), Option<String>> {
    let program = match env().compile(source) {
        Ok(p) => p,
        Err(errors) => return Err(Some(describe_parse_errors(source, &errors))),
    };
    let d = depth(program.expression());
    if d > MAX_DEPTH {
        drop(program);
        return Err(Some(format!(
            "nested {d} levels deep (at most {MAX_DEPTH})"
        )));
    }
    let refs = program.references();
    let needs = Needs {
        payload: refs.has_variable("payload"),
        headers: refs.has_variable("headers"),
        key: refs.has_variable("key"),
        topic: refs.has_variable("topic"),
    };
    drop(refs);
    Ok((program, needs))
}

/// Render parse errors as `<input>:line:col: message`, with the source line and a caret
/// when the line is short (the crate's own `Display` panics on very long lines).
fn describe_parse_errors(source: &str, errors: &cel::ParseErrors) -> String {
    const MAX_ERRORS: usize = 3;
    const MAX_SNIPPET: usize = 160;
    let mut out = Vec::new();
    for e in errors.errors.iter().take(MAX_ERRORS) {
        let (line, col) = e.pos;
        let mut text = format!("<input>:{line}:{col}: {}", e.msg);
        let snippet = usize::try_from(line - 1)
            .ok()
            .and_then(|l| source.lines().nth(l));
        if let (Some(snippet), Ok(col)) = (snippet, usize::try_from(col)) {
            if snippet.chars().count() <= MAX_SNIPPET && col <= MAX_SNIPPET + 1 {
                text.push_str(&format!(
                    "\n| {snippet}\n| {}^",
                    ".".repeat(col.saturating_sub(1))
                ));
            }
        }
        out.push(text);
    }
    if errors.errors.len() > MAX_ERRORS {
        out.push(format!(
            "(and {} more errors)",
            errors.errors.len() - MAX_ERRORS
        ));
    }
    out.join("\n")
}

/// Compile `source`: the program and the message parts it reads, or a message naming the
/// expression with `<input>:line:col` positions.
pub fn compile(source: &str) -> Result<(Program, Needs), String> {
    if source.len() > MAX_SOURCE_LEN {
        return Err(format!(
            "invalid CEL expression {}: longer than {MAX_SOURCE_LEN} bytes",
            py_quote_short(source, 200)
        ));
    }
    let owned = source.to_owned();
    let worker = std::thread::Builder::new()
        .name("agentflow-cel-compile".to_owned())
        .stack_size(COMPILE_STACK)
        .spawn(move || compile_checked(&owned));
    let result = match worker {
        Ok(handle) => handle.join().unwrap_or(Err(None)),
        Err(_) => Err(Some("could not start the compiler thread".to_owned())),
    };
    result.map_err(|detail| {
        format!(
            "invalid CEL expression {}: {}",
            py_quote_short(source, 200),
            detail.unwrap_or_else(|| "the parser failed".to_owned())
        )
    })
}

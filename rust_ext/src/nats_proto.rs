//! NATS protocol frames: `MSG`/`HMSG` cut from the client's read buffer, and `PUB`/`HPUB`
//! commands written for a batch of messages, each in one call.
//!
//! nats-py's parser tries two regexes, fills a dict and slices the buffer twice per message,
//! about 3.5 us each in Python; every agentflow message brings two or three (its delivery,
//! its output's PubAck, an idempotency claim's PubAck). Other operations (`PING`, `INFO`,
//! `-ERR`, ...) are left to nats-py's parser: the scan stops in front of them.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple};
use std::ops::Range;

/// One message: its subscription id and where its parts are in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub sid: u64,
    pub subject: Range<usize>,
    pub reply: Range<usize>,
    pub headers: Option<Range<usize>>,
    pub payload: Range<usize>,
}

/// What follows the last whole frame.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Rest {
    /// Nothing: the buffer was all frames.
    Empty = 0,
    /// A frame not yet complete (or the start of one): wait for more bytes.
    Partial = 1,
    /// Another operation: nats-py's own parser takes it from here.
    Other = 2,
}

fn is_space(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 19 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(token.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The frame whose control line is `b[start..eol]` (data right after its CRLF), or an error.
fn frame(b: &[u8], start: usize, eol: usize, with_headers: bool) -> Result<(Frame, usize), String> {
    let mut tokens: Vec<Range<usize>> = Vec::with_capacity(6);
    let mut i = start;
    while i < eol {
        while i < eol && is_space(b[i]) {
            i += 1;
        }
        let from = i;
        while i < eol && !is_space(b[i]) {
            i += 1;
        }
        if from < i {
            tokens.push(from..i);
        }
    }
    let malformed = || {
        let line = String::from_utf8_lossy(&b[start..eol]);
        format!("malformed NATS message line {line:?}")
    };
    let args = &tokens[1..];
    let fixed = if with_headers { 4 } else { 3 };
    if args.len() != fixed && args.len() != fixed + 1 {
        return Err(malformed());
    }
    let sid = number(&b[args[1].clone()]).ok_or_else(malformed)?;
    let reply = if args.len() == fixed + 1 {
        args[2].clone()
    } else {
        eol..eol
    };
    let total = number(&b[args[args.len() - 1].clone()]).ok_or_else(malformed)? as usize;
    let header_size = if with_headers {
        let size = number(&b[args[args.len() - 2].clone()]).ok_or_else(malformed)? as usize;
        if size > total {
            return Err(malformed());
        }
        Some(size)
    } else {
        None
    };
    let data = eol + 2;
    let end = data + total;
    let (headers, payload) = match header_size {
        Some(size) => (Some(data..data + size), data + size..end),
        None => (None, data..end),
    };
    let f = Frame {
        sid,
        subject: args[0].clone(),
        reply,
        headers,
        payload,
    };
    Ok((f, end + 2))
}

/// Every whole frame at the start of `b`, the bytes they take, and what comes after them.
pub fn scan(b: &[u8]) -> Result<(Vec<Frame>, usize, Rest), String> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let rest = &b[at..];
        let with_headers = if rest.starts_with(b"MSG ") || rest.starts_with(b"MSG\t") {
            false
        } else if rest.starts_with(b"HMSG ") || rest.starts_with(b"HMSG\t") {
            true
        } else if b"HMSG".starts_with(rest) || b"MSG".starts_with(rest) {
            return Ok((frames, at, Rest::Partial));
        } else {
            return Ok((frames, at, Rest::Other));
        };
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n").map(|p| at + p) else {
            return Ok((frames, at, Rest::Partial));
        };
        let (f, next) = frame(b, at, eol, with_headers)?;
        if next > b.len() {
            return Ok((frames, at, Rest::Partial));
        }
        frames.push(f);
        at = next;
    }
    Ok((frames, at, Rest::Empty))
}

/// `(frames, consumed, rest)` of a NATS read buffer; each frame is the argument tuple of
/// nats-py's `Client._process_msg`: `(sid, subject, reply, payload, headers or None)`.
/// `rest` is 0 (all consumed), 1 (wait for more bytes) or 2 (another operation follows).
#[pyfunction]
#[pyo3(name = "nats_frames")]
pub fn py_nats_frames<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyByteArray>,
) -> PyResult<(Bound<'py, PyList>, usize, u8)> {
    let (frames, used, rest, b) = {
        // SAFETY: no Python code runs while this borrow lives (the scan is pure Rust); the
        // frames are then copied out, since building Python objects may run the collector.
        let whole = unsafe { buf.as_bytes() };
        let (frames, used, rest) = scan(whole).map_err(PyValueError::new_err)?;
        (frames, used, rest, whole[..used].to_vec())
    };
    let out = PyList::empty(py);
    for f in frames {
        let headers = match f.headers {
            Some(h) => PyBytes::new(py, &b[h]).into_any(),
            None => py.None().into_bound(py),
        };
        let item = PyTuple::new(
            py,
            [
                f.sid.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &b[f.subject]).into_any(),
                PyBytes::new(py, &b[f.reply]).into_any(),
                PyBytes::new(py, &b[f.payload]).into_any(),
                headers,
            ],
        )?;
        out.append(item)?;
    }
    Ok((out, used, rest as u8))
}

/// Append the `PUB`/`HPUB` command of one message to `out` (`reply` empty: none).
pub fn write_pub(out: &mut Vec<u8>, subject: &str, reply: &str, block: &[u8], payload: &[u8]) {
    use std::io::Write;
    let target_sep = if reply.is_empty() { "" } else { " " };
    // Writing into a Vec cannot fail.
    if block.is_empty() {
        let _ = write!(
            out,
            "PUB {subject}{target_sep}{reply} {}\r\n",
            payload.len()
        );
    } else {
        let total = block.len() + payload.len();
        let _ = write!(
            out,
            "HPUB {subject}{target_sep}{reply} {} {total}\r\n",
            block.len()
        );
        out.extend_from_slice(block);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The `PUB`/`HPUB` commands of `(subject, header block, payload)` messages as one write;
/// message `i` asks for its reply on `<reply_prefix>.<first_token + i>` (no reply subject
/// when `reply_prefix` is empty). Subjects and blocks are checked by the caller.
#[pyfunction]
#[pyo3(name = "nats_pub_commands")]
pub fn py_nats_pub_commands<'py>(
    py: Python<'py>,
    frames: &Bound<'py, PyList>,
    reply_prefix: &str,
    first_token: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(frames.len() * 512);
    let mut reply = String::new();
    for (i, frame) in frames.iter().enumerate() {
        let frame = frame.cast::<PyTuple>()?;
        let subject = frame.get_item(0)?;
        let block = frame.get_item(1)?;
        let payload = frame.get_item(2)?;
        reply.clear();
        if !reply_prefix.is_empty() {
            reply.push_str(reply_prefix);
            reply.push('.');
            reply.push_str(&(first_token + i as u64).to_string());
        }
        write_pub(
            &mut out,
            subject.cast::<PyString>()?.to_str()?,
            &reply,
            block.cast::<PyBytes>()?.as_bytes(),
            payload.cast::<PyBytes>()?.as_bytes(),
        );
    }
    Ok(PyBytes::new(py, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = (u64, Vec<u8>, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

    fn parts(b: &[u8], f: &Frame) -> Parts {
        (
            f.sid,
            b[f.subject.clone()].to_vec(),
            b[f.reply.clone()].to_vec(),
            f.headers.clone().map(|h| b[h].to_vec()),
            b[f.payload.clone()].to_vec(),
        )
    }

    #[test]
    fn msg_with_and_without_reply() {
        let b = b"MSG a.b 7 12\r\n0123456789ab\r\nMSG c 8 _INBOX.x 2\r\nhi\r\n";
        let (frames, used, rest) = scan(b).unwrap();
        assert_eq!((used, rest), (b.len(), Rest::Empty));
        assert_eq!(
            parts(b, &frames[0]),
            (7, b"a.b".to_vec(), vec![], None, b"0123456789ab".to_vec())
        );
        assert_eq!(
            parts(b, &frames[1]),
            (8, b"c".to_vec(), b"_INBOX.x".to_vec(), None, b"hi".to_vec())
        );
    }

    #[test]
    fn hmsg_splits_headers_from_payload() {
        let b = b"HMSG s 3 r 12 14\r\nNATS/1.0\r\n\r\nok\r\n";
        let (frames, _, rest) = scan(b).unwrap();
        assert_eq!(rest, Rest::Empty);
        let want = (
            3,
            b"s".to_vec(),
            b"r".to_vec(),
            Some(b"NATS/1.0\r\n\r\n".to_vec()),
            b"ok".to_vec(),
        );
        assert_eq!(parts(b, &frames[0]), want);
    }

    #[test]
    fn stops_before_a_partial_frame() {
        let whole = b"MSG a 1 3\r\nabc\r\n";
        for cut in 0..whole.len() {
            let mut b = b"MSG z 2 1\r\nx\r\n".to_vec();
            b.extend_from_slice(&whole[..cut]);
            let (frames, used, rest) = scan(&b).unwrap();
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert_eq!(used, 14);
            assert_eq!(
                rest,
                if cut == 0 { Rest::Empty } else { Rest::Partial },
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn stops_before_other_operations() {
        let b = b"MSG a 1 0\r\n\r\nPING\r\nMSG b 2 0\r\n\r\n";
        let (frames, used, rest) = scan(b).unwrap();
        assert_eq!((frames.len(), used, rest), (1, 13, Rest::Other));
        assert_eq!(scan(b"+OK\r\n").unwrap().2, Rest::Other);
        assert_eq!(scan(b"-ERR 'x'\r\n").unwrap().2, Rest::Other);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b"MSG a x 3\r\nabc\r\n"[..],
            b"MSG a 1\r\n\r\n",
            b"MSG a 1 b c 3\r\nabc\r\n",
            b"HMSG a 1 9 3\r\nabc\r\n",
            b"MSG a 1 -3\r\n",
        ] {
            let err = scan(bad).unwrap_err();
            assert!(err.contains("malformed NATS message line"), "{err}");
        }
    }

    #[test]
    fn pub_commands_with_and_without_headers_and_reply() {
        let mut out = Vec::new();
        write_pub(&mut out, "a.b", "_INBOX.x.7", b"", b"hello");
        write_pub(&mut out, "c", "", b"NATS/1.0\r\n\r\n", b"{}");
        write_pub(&mut out, "d", "", b"", b"");
        let want: &[u8] = b"PUB a.b _INBOX.x.7 5\r\nhello\r\nHPUB c 12 14\r\nNATS/1.0\r\n\r\n{}\r\nPUB d 0\r\n\r\n";
        assert_eq!(out, want);
        // What it writes, the frame scanner reads back (as the server would deliver it).
        let echoed = String::from_utf8(out)
            .unwrap()
            .replace("HPUB c", "HMSG c 1")
            .replace("PUB a.b", "MSG a.b 2")
            .replace("PUB d", "MSG d 3");
        let (frames, _, rest) = scan(echoed.as_bytes()).unwrap();
        assert_eq!(rest, Rest::Empty);
        assert_eq!(frames.len(), 3);
    }
}

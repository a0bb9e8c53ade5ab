//! Envelope headers: the `af-*` wire format (pure Rust; the Python face is in `codec`).

pub const H_ID: &str = "af-id";
pub const H_KEY: &str = "af-key";
pub const H_ATTEMPT: &str = "af-attempt";
pub const H_CORRELATION: &str = "af-correlation-id";
pub const H_CAUSATION: &str = "af-causation-id";
pub const H_AGENT: &str = "af-agent";
pub const H_TS: &str = "af-ts";
pub const H_CONTENT_TYPE: &str = "content-type";
pub const H_TRACEPARENT: &str = "traceparent";
pub const H_TRACESTATE: &str = "tracestate";

/// Header names `encode_headers` owns: an extra with one of these names is dropped.
pub const OWNED: [&str; 8] = [
    H_ID,
    H_KEY,
    H_ATTEMPT,
    H_CORRELATION,
    H_CAUSATION,
    H_AGENT,
    H_TS,
    H_CONTENT_TYPE,
];

/// Why a header set could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    InvalidUtf8 { name: String },
    InvalidName,
    NotInteger { name: String, value: String },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::InvalidUtf8 { name } => {
                write!(f, "header {name}: value is not valid UTF-8")
            }
            HeaderError::InvalidName => write!(f, "header name is not valid UTF-8"),
            HeaderError::NotInteger { name, value } => write!(
                f,
                "header {name}: expected a positive integer (or 0), got {}",
                quote(value)
            ),
        }
    }
}

/// Python-style single-quoted, truncated rendering of a bad value for error messages.
fn quote(value: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("'");
    for (i, c) in value.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Strict non-negative decimal integer: ASCII digits only, no sign, no spaces, fits u64.
pub fn parse_uint(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Decoded envelope (pure Rust).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeData {
    pub message_id: Option<String>,
    pub key: Option<String>,
    pub attempt: Option<u64>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub agent: Option<String>,
    pub ts_ms: Option<u64>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Other headers in arrival order; `af-*` names lower-cased. Later duplicates win.
    pub extra: Vec<(String, String)>,
}

/// Whether a header name starts with `af-` (any case). Byte-wise: never slices inside a char.
pub fn is_af(name: &str) -> bool {
    name.as_bytes()
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"af-"))
}

fn utf8(name: &str, value: &[u8]) -> Result<String, HeaderError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| HeaderError::InvalidUtf8 {
            name: name.to_owned(),
        })
}

fn uint(name: &str, value: &[u8]) -> Result<u64, HeaderError> {
    let text = std::str::from_utf8(value).map_err(|_| HeaderError::InvalidUtf8 {
        name: name.to_owned(),
    })?;
    parse_uint(text).ok_or_else(|| HeaderError::NotInteger {
        name: name.to_owned(),
        value: text.to_owned(),
    })
}

impl EnvelopeData {
    /// Add one header (name as sent, raw value). Later headers with the same name win.
    pub fn push(&mut self, name: &str, value: &[u8]) -> Result<(), HeaderError> {
        let known = [
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
        ]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(name));
        match known {
            Some(H_ID) => self.message_id = Some(utf8(H_ID, value)?),
            Some(H_KEY) => self.key = Some(utf8(H_KEY, value)?),
            Some(H_ATTEMPT) => self.attempt = Some(uint(H_ATTEMPT, value)?),
            Some(H_CORRELATION) => self.correlation_id = Some(utf8(H_CORRELATION, value)?),
            Some(H_CAUSATION) => self.causation_id = Some(utf8(H_CAUSATION, value)?),
            Some(H_AGENT) => self.agent = Some(utf8(H_AGENT, value)?),
            Some(H_TS) => self.ts_ms = Some(uint(H_TS, value)?),
            Some(H_CONTENT_TYPE) => self.content_type = Some(utf8(H_CONTENT_TYPE, value)?),
            Some(H_TRACEPARENT) => self.traceparent = Some(utf8(H_TRACEPARENT, value)?),
            Some(H_TRACESTATE) => self.tracestate = Some(utf8(H_TRACESTATE, value)?),
            _ => {
                let stored = if is_af(name) {
                    name.to_ascii_lowercase()
                } else {
                    name.to_owned()
                };
                let text = utf8(&stored, value)?;
                if let Some(slot) = self.extra.iter_mut().find(|(n, _)| *n == stored) {
                    slot.1 = text;
                } else {
                    self.extra.push((stored, text));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_headers_case_insensitively() {
        let mut e = EnvelopeData::default();
        e.push("AF-ID", b"01ABC").unwrap();
        e.push("af-Attempt", b"3").unwrap();
        e.push("af-ts", b"1700000000000").unwrap();
        e.push("Content-Type", b"application/json").unwrap();
        e.push("af-dlq-reason", b"x").unwrap();
        e.push("AF-Not-Before", b"5").unwrap();
        e.push("X-User", b"u").unwrap();
        e.push("X-User", b"v").unwrap();
        assert_eq!(e.message_id.as_deref(), Some("01ABC"));
        assert_eq!(e.attempt, Some(3));
        assert_eq!(e.ts_ms, Some(1_700_000_000_000));
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            e.extra,
            vec![
                ("af-dlq-reason".to_owned(), "x".to_owned()),
                ("af-not-before".to_owned(), "5".to_owned()),
                ("X-User".to_owned(), "v".to_owned()),
            ]
        );
    }

    #[test]
    fn rejects_garbled_integers() {
        for bad in [
            "abc",
            "-1",
            "+1",
            " 1",
            "1.0",
            "",
            "99999999999999999999999",
        ] {
            let mut e = EnvelopeData::default();
            let err = e.push("af-attempt", bad.as_bytes()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("header af-attempt: expected a positive integer"),
                "{msg}"
            );
        }
        let mut e = EnvelopeData::default();
        assert_eq!(
            e.push("af-ts", b"abc").unwrap_err().to_string(),
            "header af-ts: expected a positive integer (or 0), got 'abc'"
        );
    }

    #[test]
    fn rejects_invalid_utf8() {
        let mut e = EnvelopeData::default();
        let err = e.push("x-bin", &[0xff, 0xfe]).unwrap_err();
        assert_eq!(err.to_string(), "header x-bin: value is not valid UTF-8");
        let err = e.push("af-attempt", &[0xff]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header af-attempt: value is not valid UTF-8"
        );
    }

    #[test]
    fn non_ascii_names_do_not_panic() {
        let mut e = EnvelopeData::default();
        e.push("x\u{b81cc}", b"v").unwrap();
        e.push("\u{e9}", b"v").unwrap();
        e.push("AF-\u{e9}", b"v").unwrap();
        assert!(is_af("Af-x") && !is_af("a") && !is_af("\u{e9}f-"));
        assert_eq!(e.extra.last().unwrap().0, "af-\u{e9}");
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("a'b"), "'a\\'b'");
        assert_eq!(quote("\n"), "'\\n'");
        assert!(quote(&"x".repeat(100)).ends_with("...'"));
    }
}

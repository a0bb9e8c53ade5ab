//! Walking JSON text that was already validated: members of an object, elements of an array,
//! the end of a value. No allocation and no re-validation, so the fast CEL path can read the
//! few members a condition needs straight from the payload.

use crate::pick::string_of;
use std::borrow::Cow;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End of the (validated) value starting at `i`.
fn value_end(b: &[u8], mut i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'[' | b'{') => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i);
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i
        }
        _ => {
            while i < b.len() && !matches!(b[i], b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            i
        }
    }
}

/// End (one past the closing quote) of the string starting at `i`.
fn string_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Elements of a validated JSON array, as raw text.
pub struct Elements<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Elements<'a> {
    pub fn new(text: &'a str) -> Self {
        Elements { text, at: 1 }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let i = skip_ws(b, self.at);
        if i >= b.len() || b[i] == b']' {
            self.at = b.len();
            return None;
        }
        let end = value_end(b, i);
        let after = skip_ws(b, end);
        self.at = if b.get(after) == Some(&b',') {
            after + 1
        } else {
            after
        };
        self.text.get(i..end)
    }
}

/// Members of a validated JSON object: (unescaped name, raw value).
pub struct Members<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Members<'a> {
    pub fn new(text: &'a str) -> Self {
        Members { text, at: 1 }
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.text.as_bytes();
        let i = skip_ws(b, self.at);
        if i >= b.len() || b[i] != b'"' {
            self.at = b.len();
            return None;
        }
        let name_end = string_end(b, i);
        let name = string_of(self.text.get(i..name_end)?);
        let colon = skip_ws(b, name_end);
        let start = skip_ws(b, colon + 1);
        let end = value_end(b, start);
        let after = skip_ws(b, end);
        self.at = if b.get(after) == Some(&b',') {
            after + 1
        } else {
            after
        };
        Some((name, self.text.get(start..end)?))
    }
}

/// The raw value of member `name` of a validated JSON object (later duplicates win).
pub fn member<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    for (k, v) in Members::new(raw) {
        if k == name {
            found = Some(v);
        }
    }
    found
}

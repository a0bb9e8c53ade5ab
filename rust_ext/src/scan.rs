//! A single-pass validating scanner for the common case of [`crate::pick::pick`]: a JSON
//! object whose member names have no escapes, numbers without exponents, strings without
//! `\u` surrogates, nesting at most [`MAX_DEPTH`] deep.
//!
//! It validates the whole text as strictly as `serde_json` does (UTF-8, grammar, no control
//! characters in strings, valid escapes, nothing after the value) and keeps the raw text of
//! the wanted top-level members. It is conservative: `None` means "not decided here" (invalid,
//! or merely outside the common case), and the caller then runs [`crate::pick::pick`], which is
//! the reference for what is accepted and for the error message. So whatever this accepts,
//! `serde_json` accepts too, with the same members picked.

/// Deepest nesting handled here (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 64;

/// Raw members of the object `text` whose names are in `wanted` (later duplicates win), or
/// `None` (the caller falls back to `pick`).
pub fn scan<'a>(text: &'a [u8], wanted: &[String]) -> Option<Vec<Option<&'a str>>> {
    let s = std::str::from_utf8(text).ok()?;
    let b = text;
    let mut slots: Vec<Option<&'a str>> = vec![None; wanted.len()];
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let name_start = i + 1;
            let (end, escaped) = string(b, i)?;
            if escaped {
                return None;
            }
            let name = &s[name_start..end - 1];
            i = ws(b, end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = ws(b, i + 1);
            let start = i;
            i = value(b, i, 1)?;
            // First byte and length before the bytes: most names differ there.
            let first = name.as_bytes().first();
            if let Some(at) = wanted
                .iter()
                .position(|w| w.len() == name.len() && w.as_bytes().first() == first && w == name)
            {
                slots[at] = Some(&s[start..i]);
            }
            i = ws(b, i);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (ws(b, i) == b.len()).then_some(slots)
}

/// Whether the whole of `text` is JSON this scanner accepts (any top-level value).
pub fn validate(text: &[u8]) -> bool {
    if std::str::from_utf8(text).is_err() {
        return false;
    }
    let i = ws(text, 0);
    match value(text, i, 0) {
        Some(end) => ws(text, end) == text.len(),
        None => false,
    }
}

#[inline]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// End of the value at `i`.
fn value(b: &[u8], mut i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string(b, i).map(|(end, _)| end),
        b'{' => {
            if depth >= MAX_DEPTH {
                return None;
            }
            i = ws(b, i + 1);
            if b.get(i) == Some(&b'}') {
                return Some(i + 1);
            }
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                i = ws(b, string(b, i)?.0);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = ws(b, i + 1);
                i = ws(b, value(b, i, depth + 1)?);
                match b.get(i) {
                    Some(b',') => i = ws(b, i + 1),
                    Some(b'}') => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b'[' => {
            if depth >= MAX_DEPTH {
                return None;
            }
            i = ws(b, i + 1);
            if b.get(i) == Some(&b']') {
                return Some(i + 1);
            }
            loop {
                i = ws(b, value(b, i, depth + 1)?);
                match b.get(i) {
                    Some(b',') => i = ws(b, i + 1),
                    Some(b']') => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        _ => number(b, i),
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?` (exponents are left to serde_json).
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !b.get(i)?.is_ascii_digit() {
            return None;
        }
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        return None;
    }
    Some(i)
}

/// Bytes of `w` that are `"`, `\\` or below 0x20, as their high bits (SWAR; the lowest set
/// bit is exact, higher ones may be spurious).
#[inline]
fn special_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero(w ^ (ONES * b'"' as u64));
    let slash = zero(w ^ (ONES * b'\\' as u64));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    quote | slash | control
}

/// The string starting at `i` (a `"`): (one past its closing quote, whether it has escapes).
fn string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    i += 1;
    let mut escaped = false;
    loop {
        // Jump to the next `"`, `\\` or control character, 8 bytes at a time.
        while let Some(chunk) = b.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let mask = special_mask(u64::from_le_bytes(word));
            if mask != 0 {
                i += (mask.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let c = *b.get(i)?;
        if c != b'"' && c != b'\\' && c >= 0x20 {
            i += 1;
            continue;
        }
        match c {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let hex = b.get(i + 2..i + 6)?;
                        let text = std::str::from_utf8(hex).ok()?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        let code = u32::from_str_radix(text, 16).ok()?;
                        if (0xD800..0xE000).contains(&code) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            _ => return None, // a control character
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::pick;
    use serde::de::IgnoredAny;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn picks_like_pick() {
        let text = br#" {"a": 1, "b": {"x": [1, 2.5, -0]}, "c": "s\"q\u00e9", "a": 2.50,
                       "skip": [true, false, null, {}, []], "u": "\u20ac\ud83d\ude00" } "#;
        let w = names(&["a", "b", "c", "zz"]);
        // The surrogate pair makes the scanner step aside; without it, both agree.
        assert_eq!(scan(text, &w), None);
        let text = br#" {"a": 1, "b": {"x": [1, 2.5, -0]}, "c": "s\"q\u00e9", "a": 2.50,
                       "skip": [true, false, null, {}, []], "u": "\u20ac" } "#;
        assert_eq!(scan(text, &w), pick(text, &w));
        assert!(scan(text, &w).is_some());
    }

    /// A small deterministic generator (no external crates).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_accepts_what_serde_rejects() {
        let seeds: [&[u8]; 4] = [
            br#"{"id": "ord-1", "amount": 12.5, "tags": ["vip", "new"], "c": {"t": "g"}}"#,
            br#"{"a": [1, -2, 0.25, true, false, null], "b": "x\\y\n\u0041", "e": {}}"#,
            br#"{"s": "caf\u00e9 \"q\"", "n": -0, "z": [[[]]], "k": {"x": {"y": 1}}}"#,
            "{\"u\": \"é€😀\", \"v\": 10}".as_bytes(),
        ];
        let alphabet = b"{}[]\":,\\ \t\n0123456789-.eEtrufalsn\x01\x7fu";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let wanted = names(&["a", "id", "s", "tags", "u"]);
        let (mut accepted, mut total) = (0, 0);
        for _ in 0..200_000 {
            let mut text = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(text.len() + 1);
                match rng.below(4) {
                    0 if at < text.len() => {
                        text.remove(at);
                    }
                    1 => text.insert(at, alphabet[rng.below(alphabet.len())]),
                    2 if at < text.len() => text[at] = alphabet[rng.below(alphabet.len())],
                    _ => text.truncate(at),
                }
            }
            total += 1;
            let serde_ok = serde_json::from_slice::<IgnoredAny>(&text).is_ok();
            if validate(&text) {
                assert!(serde_ok, "{}", String::from_utf8_lossy(&text));
            }
            if let Some(slots) = scan(&text, &wanted) {
                accepted += 1;
                assert!(serde_ok, "{}", String::from_utf8_lossy(&text));
                assert_eq!(Some(slots), pick(&text, &wanted));
            }
        }
        assert!(accepted > total / 20, "{accepted} of {total}");
    }
}

//! Keys and partitions: Kafka's default murmur2 partitioner and key extraction from JSON.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::Value as Json;

/// Murmur2 exactly as `org.apache.kafka.common.utils.Utils.murmur2` (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partition for a non-null key: `toPositive(murmur2(key)) % n`.
pub fn partition(key: &[u8], num_partitions: u32) -> u32 {
    ((murmur2(key) as u32) & 0x7fff_ffff) % num_partitions
}

/// Follow a dotted path (`customer.id`; a numeric segment indexes an array) into JSON.
/// Strings come back as they are, other scalars as their JSON text, objects and arrays as
/// compact JSON; a missing field or `null` is `None`.
pub fn extract_key(payload: &[u8], path: &str) -> Result<Option<String>, String> {
    if path.is_empty() {
        return Err("key path must not be empty".to_owned());
    }
    let doc: Json =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not valid JSON: {e}"))?;
    let mut node = &doc;
    for segment in path.split('.') {
        let next = match node {
            Json::Object(map) => map.get(segment),
            Json::Array(items)
                if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) =>
            {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(match node {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    })
}

/// Kafka's default partitioner (murmur2, seed 0x9747b28c) for a non-null key.
#[pyfunction]
#[pyo3(name = "murmur2_partition")]
pub fn py_murmur2_partition(key: &[u8], num_partitions: i64) -> PyResult<u32> {
    match u32::try_from(num_partitions) {
        Ok(n) if n > 0 && n <= i32::MAX as u32 => Ok(partition(key, n)),
        _ => Err(PyValueError::new_err(format!(
            "num_partitions must be between 1 and 2147483647, got {num_partitions}"
        ))),
    }
}

/// The value at a dotted `path` in a raw JSON payload, as text (`None` when absent or null).
#[pyfunction]
#[pyo3(name = "extract_key")]
pub fn py_extract_key(payload: &[u8], path: &str) -> PyResult<Option<String>> {
    extract_key(payload, path).map_err(PyValueError::new_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_known_vectors() {
        // Vectors of the Java client's Utils.murmur2 (as also used by librdkafka's tests).
        let cases: [(&[u8], u32); 7] = [
            (b"kafka", 0xd067_cf64),
            (b"giberish123456789", 0x8f55_2b0c),
            (b"1234", 0x9fc9_7b14),
            (b"234", 0xe7c0_09ca),
            (b"34", 0x8739_30da),
            (b"4", 0x5a4b_5ca1),
            (b"", 0x106e_08d9),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key) as u32, want, "{key:?}");
        }
    }

    #[test]
    fn murmur2_tail_lengths_and_sign() {
        // Values cross-checked against an independent Python port in tests/unit.
        let mut seen = std::collections::HashSet::new();
        for len in 0..9 {
            let data: Vec<u8> = (0..len).map(|i| 0xf0 + i as u8).collect();
            seen.insert(murmur2(&data));
            let p = partition(&data, 7);
            assert!(p < 7);
        }
        assert_eq!(seen.len(), 9);
    }

    #[test]
    fn keys() {
        let p = br#"{"id": "a1", "n": 12, "f": 1.50, "b": true, "z": null,
                     "c": {"id": 42, "tags": ["x", "y"]}, "big": 123456789012345678901234567890}"#;
        assert_eq!(extract_key(p, "id"), Ok(Some("a1".into())));
        assert_eq!(extract_key(p, "n"), Ok(Some("12".into())));
        assert_eq!(extract_key(p, "f"), Ok(Some("1.50".into())));
        assert_eq!(extract_key(p, "b"), Ok(Some("true".into())));
        assert_eq!(extract_key(p, "z"), Ok(None));
        assert_eq!(extract_key(p, "c.id"), Ok(Some("42".into())));
        assert_eq!(extract_key(p, "c.tags.1"), Ok(Some("y".into())));
        assert_eq!(extract_key(p, "c.tags.+1"), Ok(None));
        assert_eq!(extract_key(p, "c.tags"), Ok(Some(r#"["x","y"]"#.into())));
        assert_eq!(
            extract_key(p, "big"),
            Ok(Some("123456789012345678901234567890".into()))
        );
        assert_eq!(extract_key(p, "missing.x"), Ok(None));
        assert_eq!(extract_key(p, "id.x"), Ok(None));
        assert!(extract_key(b"{", "id").is_err());
        assert!(extract_key(p, "").is_err());
    }
}

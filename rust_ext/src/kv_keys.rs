//! Idempotency keys as JetStream KV keys: URL-safe base64 (no padding) of the key's UTF-8,
//! or `h_` + hex SHA-256 when that is empty or longer than a KV key may be.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pyo3::prelude::*;
use sha2::{Digest, Sha256};

/// Longest encoded key kept as it is (KV keys are subjects: keep them short).
const MAX_ENCODED: usize = 200;

/// The KV key of an idempotency key (deterministic; only characters KV keys allow).
pub fn kv_key(key: &str) -> String {
    let encoded = URL_SAFE_NO_PAD.encode(key.as_bytes());
    if !encoded.is_empty() && encoded.len() <= MAX_ENCODED {
        return encoded;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(2 + 64);
    out.push_str("h_");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Encode an arbitrary idempotency key as a valid KV key (deterministic).
#[pyfunction]
#[pyo3(name = "kv_key")]
pub fn py_kv_key(key: &str) -> String {
    kv_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_url_safe_base64_without_padding() {
        assert_eq!(kv_key("order-1"), "b3JkZXItMQ");
        assert_eq!(kv_key("?>?"), "Pz4_"); // '_' where standard base64 has '/'
    }

    #[test]
    fn empty_and_long_keys_are_hashed() {
        let empty = kv_key("");
        assert!(empty.starts_with("h_") && empty.len() == 66);
        let long = "x".repeat(151); // 204 base64 characters
        let hashed = kv_key(&long);
        assert!(hashed.starts_with("h_") && hashed.len() == 66);
        assert_eq!(kv_key(&"x".repeat(150)).len(), 200);
    }
}

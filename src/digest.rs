//! Content digests as the state and the lock file record them:
//! `sha256:` and the hex of the SHA-256 of a value's compact JSON.
//!
//! A leaf; it must not know what it digests.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `v` serialized as compact JSON (object keys sorted).
pub fn digest(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let hash = Sha256::digest(&bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

//! The names a remote-loop session goes by: agentform's session id joins
//! the id the in-sandbox `serve` gave the session and the sandbox's id, so
//! the state (which records only the id) finds the sandbox again from
//! any later command; and the in-sandbox serve's API key, derived from
//! the provider's own key and the sandbox id, so that it is never stored
//! anywhere and every command holding the provider's key can recompute
//! it. Nothing here reaches the network.

use sha2::{Digest, Sha256};

/// Between the serve's session id and the sandbox id; neither has one.
const JOIN: char = '.';

/// agentform's id of the session `remote` in sandbox `sandbox`.
pub fn session_id(remote: &str, sandbox: &str) -> String {
    format!("{remote}{JOIN}{sandbox}")
}

/// The serve's session id and the sandbox id of agentform's session id;
/// `None` when `id` is not one of this provider's.
pub fn split_session_id(id: &str) -> Option<(&str, &str)> {
    let (remote, sandbox) = id.rsplit_once(JOIN)?;
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    (word(remote) && word(sandbox)).then_some((remote, sandbox))
}

/// The API key of the serve in `sandbox`: HMAC-SHA256 of the sandbox id
/// under the provider's key, in hex. It cannot be turned back into the
/// provider's key, and it opens that one sandbox's serve only.
pub fn serve_key(provider_key: &str, sandbox: &str) -> String {
    const BLOCK: usize = 64;
    let mut key = provider_key.as_bytes().to_vec();
    if key.len() > BLOCK {
        key = Sha256::digest(&key).to_vec();
    }
    key.resize(BLOCK, 0);
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    inner.update(b"agentform-serve:");
    inner.update(sandbox.as_bytes());
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    let mut out = String::from("afs_");
    for b in outer.finalize() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_join_and_split() {
        let id = session_id("sesn_01AbC", "i3x9k2m1");
        assert_eq!(id, "sesn_01AbC.i3x9k2m1");
        assert_eq!(split_session_id(&id), Some(("sesn_01AbC", "i3x9k2m1")));
        for bad in ["sesn_01AbC", ".x", "x.", "a.b/c", "a b.c"] {
            assert_eq!(split_session_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn serve_keys_are_hmacs_per_sandbox() {
        let a = serve_key("e2b_key", "sbx1");
        assert_eq!(a, serve_key("e2b_key", "sbx1"));
        assert_ne!(a, serve_key("e2b_key", "sbx2"));
        assert_ne!(a, serve_key("e2b_kez", "sbx1"));
        assert!(!a.contains("e2b_key"));
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(serve_key(&"k".repeat(200), "s").len(), 68);
    }
}

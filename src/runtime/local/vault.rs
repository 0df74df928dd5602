//! What the local runtime stores in place of a secret: every record and
//! event goes through [`Vault::encode`] on its way into the state and through
//! [`Vault::decode`] on its way out, so the state never holds a secret and
//! readers get what was sent.
//!
//! On the way in, each occurrence of a known secret (see
//! [`LocalOptions::secrets`](super::LocalOptions)) inside any string or key
//! becomes a placeholder naming it: `\u{E000}$NAME\u{E000}` for the value of
//! the environment variable `NAME`, `\u{E000}#LABEL\u{E000}` for another
//! secret (a repository token). A `\u{E000}` a client sent is stored doubled,
//! so a client cannot forge a placeholder.
//!
//! On the way out, a placeholder becomes the secret's value: from the
//! secrets this process knows (the manifest it loaded), else, for `$NAME`,
//! from this process's environment; when neither has it, `(sensitive)`.
//! Never from the state.
//!
//! Storage only: which records exist and what they hold is the rules'.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::store::store_err;
use crate::api::Result;
use crate::db::Tree;
use crate::redact::{Secrets, SENSITIVE};

/// Opens and closes a placeholder; doubled, it is itself.
const MARK: char = '\u{E000}';

/// Seals secrets into placeholders and opens them again.
#[derive(Clone, Debug, Default)]
pub(super) struct Vault {
    secrets: Secrets,
}

impl Vault {
    pub(super) fn new(secrets: Secrets) -> Self {
        Vault { secrets }
    }

    /// `value` as stored: its secrets replaced by placeholders.
    pub(super) fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>> {
        let text = serde_json::to_string(value)
            .map_err(|e| store_err(format!("cannot encode record: {e}")))?;
        if !text.contains(MARK) && !self.secrets.occurs_in(&text) {
            return Ok(text.into_bytes());
        }
        let mut tree: Value = serde_json::from_str(&text)
            .map_err(|e| store_err(format!("cannot encode record: {e}")))?;
        walk(&mut tree, &mut |s| self.seal(s));
        serde_json::to_vec(&tree).map_err(|e| store_err(format!("cannot encode record: {e}")))
    }

    /// A stored record, its placeholders resolved.
    pub(super) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        let corrupt = |e: serde_json::Error| store_err(format!("corrupt record: {e}"));
        if !contains_mark(bytes) {
            return serde_json::from_slice(bytes).map_err(corrupt);
        }
        let mut tree: Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        walk(&mut tree, &mut |s| self.open(s));
        serde_json::from_value(tree).map_err(corrupt)
    }

    pub(super) fn get<T: DeserializeOwned>(&self, tree: &Tree, key: &[u8]) -> Result<Option<T>> {
        match tree.get(key).map_err(store_err)? {
            None => Ok(None),
            Some(bytes) => self.decode(&bytes).map(Some),
        }
    }

    pub(super) fn put<T: Serialize>(&self, tree: &Tree, id: &str, value: &T) -> Result<()> {
        tree.insert(id.as_bytes(), &self.encode(value)?)
            .map_err(store_err)?;
        Ok(())
    }

    /// `text` with marks doubled and secrets replaced; `None` when unchanged.
    fn seal(&self, text: &str) -> Option<String> {
        let found = self.secrets.occurrences(text);
        if found.is_empty() && !text.contains(MARK) {
            return None;
        }
        let escape = |s: &str, out: &mut String| {
            for c in s.chars() {
                out.push(c);
                if c == MARK {
                    out.push(MARK);
                }
            }
        };
        let mut out = String::with_capacity(text.len() + 16);
        let mut at = 0;
        for o in found {
            if o.start < at {
                continue;
            }
            escape(&text[at..o.start], &mut out);
            out.push(MARK);
            // A key cannot hold the mark; such a secret is still kept out.
            out.push_str(if o.key.contains(MARK) { "#" } else { &o.key });
            out.push(MARK);
            at = o.end;
        }
        escape(&text[at..], &mut out);
        Some(out)
    }

    /// `text` with placeholders resolved and doubled marks single again;
    /// `None` when unchanged.
    fn open(&self, text: &str) -> Option<String> {
        if !text.contains(MARK) {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(MARK) {
            out.push_str(&rest[..i]);
            let after = &rest[i + MARK.len_utf8()..];
            if let Some(tail) = after.strip_prefix(MARK) {
                out.push(MARK);
                rest = tail;
                continue;
            }
            match after.find(MARK) {
                Some(j) => {
                    out.push_str(&self.resolve(&after[..j]));
                    rest = &after[j + MARK.len_utf8()..];
                }
                // Not a placeholder (a record older than placeholders).
                None => {
                    out.push(MARK);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Some(out)
    }

    /// A placeholder's value: known to this process, or in its environment
    /// (then known from now on, so that writing it back seals it again).
    fn resolve(&self, key: &str) -> String {
        if let Some(v) = self.secrets.lookup(key) {
            return v;
        }
        if let Some(name) = key.strip_prefix('$') {
            if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
                self.secrets.add_env(name, &v);
                return v;
            }
        }
        SENSITIVE.to_string()
    }
}

fn contains_mark(bytes: &[u8]) -> bool {
    let mut buf = [0u8; 4];
    let mark = MARK.encode_utf8(&mut buf).as_bytes();
    bytes.windows(mark.len()).any(|w| w == mark)
}

/// Applies `f` to every string and object key of `value`; `f` answers the
/// replacement, or `None` to keep it.
fn walk(value: &mut Value, f: &mut dyn FnMut(&str) -> Option<String>) {
    match value {
        Value::String(s) => {
            if let Some(new) = f(s) {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, f)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            let mut new = Map::with_capacity(old.len());
            for (k, mut v) in old {
                walk(&mut v, f);
                new.insert(f(&k).unwrap_or(k), v);
            }
            *map = new;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vault() -> (Secrets, Vault) {
        let secrets = Secrets::default();
        secrets.add_env("AGENTFORM_VAULT_TEST_TOKEN", "tok-4242-secret");
        secrets.add("session.s token", "ghp_literalToken01");
        (secrets.clone(), Vault::new(secrets))
    }

    fn stored(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn secrets_are_stored_as_placeholders_and_read_back() {
        let (_, v) = vault();
        let record = json!({
            "system": "key tok-4242-secret, repo ghp_literalToken01.",
            "metadata": {"tok-4242-secret": "owner tok-4242-secret"},
            "n": 42,
        });
        let bytes = v.encode(&record).unwrap();
        let text = stored(&bytes);
        assert!(
            !text.contains("tok-4242-secret") && !text.contains("ghp_literal"),
            "{text}"
        );
        assert!(
            text.contains("\u{E000}$AGENTFORM_VAULT_TEST_TOKEN\u{E000}"),
            "{text}"
        );
        assert_eq!(v.decode::<Value>(&bytes).unwrap(), record);
    }

    #[test]
    fn without_the_secret_a_reader_gets_sensitive_or_the_environment() {
        let (_, v) = vault();
        let bytes = v
            .encode(&json!(["a tok-4242-secret b", "ghp_literalToken01"]))
            .unwrap();
        // Another process, without the manifest: the variable is unset here.
        let stranger = Vault::default();
        assert_eq!(
            stranger.decode::<Value>(&bytes).unwrap(),
            json!(["a (sensitive) b", "(sensitive)"])
        );
        // With the variable in its environment, it resolves (PATH stands in
        // for one that every process has).
        let secrets = Secrets::default();
        let path = std::env::var("PATH").unwrap();
        secrets.add_env("PATH", &path);
        let bytes = Vault::new(secrets)
            .encode(&json!(format!("p={path}")))
            .unwrap();
        assert!(!stored(&bytes).contains(&path));
        assert_eq!(
            Vault::default().decode::<Value>(&bytes).unwrap(),
            json!(format!("p={path}"))
        );
    }

    #[test]
    fn a_client_cannot_forge_a_placeholder() {
        let v = Vault::default();
        let forged = json!({"system": "\u{E000}$PATH\u{E000} and \u{E000}\u{E000}"});
        let bytes = v.encode(&forged).unwrap();
        assert_eq!(v.decode::<Value>(&bytes).unwrap(), forged);
        assert!(!stored(&bytes).contains(&std::env::var("PATH").unwrap()));
    }

    #[test]
    fn records_without_secrets_are_stored_as_before() {
        let (_, v) = vault();
        let record = json!({"name": "a", "list": [1, 2]});
        assert_eq!(
            v.encode(&record).unwrap(),
            serde_json::to_vec(&record).unwrap()
        );
        // A record of the previous version with a stray mark reads as is.
        let old = "{\"s\":\"x\u{E000}y\"}".as_bytes();
        assert_eq!(v.decode::<Value>(old).unwrap(), json!({"s": "x\u{E000}y"}));
    }
}

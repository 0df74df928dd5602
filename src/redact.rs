//! Secrets and their masking: the values read with `env()` (and repository
//! tokens, credentials) that must never reach a file or an output, and the
//! one [`Redactor`] every exit applies to them — transcripts, reports, the
//! CLI's printer and logs, HTTP errors.
//!
//! [`Secrets`] is a shared, growing table: the manifest's templates add
//! each value as they read it (step messages are rendered while running),
//! and every redactor made from the table, or from one linked to it, sees
//! the values added later. A value is masked wherever it appears, inside
//! longer strings too. Values shorter than [`MIN_SECRET_LEN`] are not masked:
//! replacing every `1` or `dev` would mangle all output.
//!
//! A leaf: knows strings, JSON and the API's error, nothing of the stages.

use std::sync::{Arc, PoisonError, RwLock};

use serde_json::Value;

use crate::api::RuntimeError;

/// What a secret becomes unless a client chooses otherwise.
pub const SENSITIVE: &str = "(sensitive)";

/// Shorter values are not masked (and `validate` says so).
pub const MIN_SECRET_LEN: usize = 8;

/// One secret and the key that names it: `$NAME` for the value of the
/// environment variable `NAME`, `#LABEL` for any other.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    /// The value as it appears inside a JSON string, when that differs.
    escaped: Option<String>,
}

impl Entry {
    /// Long enough to mask without mangling other text; blanks never are.
    fn maskable(&self) -> bool {
        self.value.chars().count() >= MIN_SECRET_LEN && !self.value.trim().is_empty()
    }
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    links: Vec<Secrets>,
}

/// Secrets by key, shared by every clone; see the module doc.
#[derive(Clone, Default)]
pub struct Secrets {
    table: Arc<RwLock<Table>>,
}

/// Never shows the values.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut n = 0;
        self.each(&mut |_| n += 1);
        f.debug_struct("Secrets").field("values", &n).finish()
    }
}

/// Where a secret occurs in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub start: usize,
    pub end: usize,
    /// `$NAME` or `#LABEL`, see [`Secrets::lookup`].
    pub key: String,
}

impl Secrets {
    /// Records the value `env("NAME")` returned.
    pub fn add_env(&self, name: &str, value: &str) {
        self.add_keyed(format!("${name}"), value);
    }

    /// Records a secret that no environment variable holds (a repository
    /// token written in the manifest, a credential); `label` names it.
    pub fn add(&self, label: &str, value: &str) {
        self.add_keyed(format!("#{label}"), value);
    }

    fn add_keyed(&self, key: String, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut known = None;
        self.each(&mut |e| {
            if e.value == value {
                known = Some(e.key.clone());
            }
        });
        match known {
            // An environment variable names a value better than a label.
            Some(k) if k.starts_with('#') && key.starts_with('$') => {
                let mut table = self.write();
                match table.entries.iter_mut().find(|e| e.value == value) {
                    Some(e) => e.key = key,
                    None => table.entries.push(entry(key, value)),
                }
            }
            Some(_) => {}
            None => {
                // Another value of the same variable (two defaults of an
                // unset one): a label, which only this table resolves.
                let mut table = self.write();
                let key = if table.entries.iter().any(|e| e.key == key) {
                    format!("#{}={}", &key[1..], table.entries.len())
                } else {
                    key
                };
                table.entries.push(entry(key, value));
            }
        }
    }

    /// Also answers with `other`'s secrets, those it has and those it gets
    /// later. A link that would close a loop is ignored.
    pub fn link(&self, other: &Secrets) {
        if other.reaches(self) || self.reaches(other) {
            return;
        }
        self.write().links.push(other.clone());
    }

    fn reaches(&self, target: &Secrets) -> bool {
        if Arc::ptr_eq(&self.table, &target.table) {
            return true;
        }
        self.links().iter().any(|l| l.reaches(target))
    }

    /// The value a key names, in this table or a linked one.
    pub fn lookup(&self, key: &str) -> Option<String> {
        let mut found = None;
        self.each(&mut |e| {
            if found.is_none() && e.key == key {
                found = Some(e.value.clone());
            }
        });
        found
    }

    /// Variables whose value is too short to be masked, with its length.
    pub fn too_short(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        self.each(&mut |e| {
            let len = e.value.chars().count();
            if let (Some(name), true) = (e.key.strip_prefix('$'), len < MIN_SECRET_LEN) {
                out.push((name.to_string(), len));
            }
        });
        out.sort();
        out.dedup();
        out
    }

    /// Whether a maskable secret occurs in `text` (as is, or as written
    /// inside a JSON string).
    pub fn occurs_in(&self, text: &str) -> bool {
        let mut hit = false;
        self.each(&mut |e| {
            hit = hit
                || (e.maskable()
                    && (text.contains(&e.value)
                        || e.escaped.as_deref().is_some_and(|s| text.contains(s))))
        });
        hit
    }

    /// Every occurrence of every maskable secret in `text`, overlapping ones
    /// included, by start (the longer first).
    pub fn occurrences(&self, text: &str) -> Vec<Occurrence> {
        self.find(text, false)
    }

    /// [`occurrences`](Self::occurrences), with `escaped`: also as written
    /// inside a JSON string.
    fn find(&self, text: &str, escaped: bool) -> Vec<Occurrence> {
        let mut out = Vec::new();
        self.each(&mut |e| {
            if !e.maskable() {
                return;
            }
            let forms =
                std::iter::once(e.value.as_str()).chain(e.escaped.as_deref().filter(|_| escaped));
            for form in forms {
                let mut from = 0;
                while let Some(i) = text[from..].find(form) {
                    let start = from + i;
                    out.push(Occurrence {
                        start,
                        end: start + form.len(),
                        key: e.key.clone(),
                    });
                    // The next char boundary: occurrences may overlap.
                    from = start + text[start..].chars().next().map_or(1, char::len_utf8);
                }
            }
        });
        out.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        out
    }

    /// A redactor that masks these secrets, now and as they grow.
    pub fn redactor(&self) -> Redactor {
        Redactor {
            secrets: self.clone(),
            mark: SENSITIVE,
        }
    }

    /// Every value, here and in linked tables.
    pub fn values(&self) -> Vec<String> {
        let mut values = Vec::new();
        self.each(&mut |e| values.push(e.value.clone()));
        values
    }

    /// Calls `f` on every entry here and in linked tables, holding one lock
    /// at a time.
    fn each(&self, f: &mut dyn FnMut(&Entry)) {
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            table.entries.iter().for_each(&mut *f);
        }
        for link in self.links() {
            link.each(f);
        }
    }

    fn links(&self) -> Vec<Secrets> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.links.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry(key: String, value: &str) -> Entry {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let escaped = quoted
        .get(1..quoted.len().saturating_sub(1))
        .filter(|s| *s != value)
        .map(str::to_string);
    Entry {
        key,
        value: value.to_string(),
        escaped,
    }
}

/// Replaces every known secret in a text by a mark.
#[derive(Clone)]
pub struct Redactor {
    secrets: Secrets,
    mark: &'static str,
}

impl Default for Redactor {
    fn default() -> Self {
        Secrets::default().redactor()
    }
}

/// Never shows the secrets.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets)
            .field("mark", &self.mark)
            .finish()
    }
}

impl Redactor {
    /// A redactor of fixed values (a client's credentials). Values shorter
    /// than [`MIN_SECRET_LEN`] are not real keys and are not scrubbed.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let table = Secrets::default();
        for (i, s) in secrets.into_iter().enumerate() {
            table.add(&format!("credential {i}"), &s);
        }
        table.redactor()
    }

    /// Writes `mark` instead of [`SENSITIVE`].
    pub fn with_mark(mut self, mark: &'static str) -> Self {
        self.mark = mark;
        self
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// `text` with every occurrence of a secret replaced by the mark;
    /// overlapping occurrences become one mark.
    pub fn text(&self, text: String) -> String {
        let found = self.secrets.find(&text, true);
        if found.is_empty() {
            return text;
        }
        let mark = self.mark;
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for o in found {
            if o.end <= at {
                continue;
            }
            if o.start >= at {
                out.push_str(&text[at..o.start]);
                out.push_str(mark);
            }
            at = o.end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Every string and object key of `value`, redacted.
    pub fn json(&self, value: &mut Value) {
        match value {
            Value::String(s) if self.secrets.occurs_in(s) => {
                *s = self.text(std::mem::take(s));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let Some(mut v) = map.remove(&key) else {
                        continue;
                    };
                    self.json(&mut v);
                    map.insert(self.text(key), v);
                }
            }
            _ => {}
        }
    }

    /// `value` as one line of JSON with its secrets masked: only the
    /// strings change, so the line stays valid JSON.
    pub fn json_line<T: serde::Serialize + ?Sized>(&self, value: &T) -> String {
        let line = serde_json::to_string(value).unwrap_or_default();
        if !self.secrets.occurs_in(&line) {
            return line;
        }
        let mut tree = serde_json::to_value(value).unwrap_or_default();
        self.json(&mut tree);
        tree.to_string()
    }

    /// The message and the request id, scrubbed.
    pub fn error(&self, mut error: RuntimeError) -> RuntimeError {
        error.message = self.text(std::mem::take(&mut error.message));
        error.request_id = error.request_id.map(|id| self.text(id));
        error
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::ErrorKind;

    #[test]
    fn redaction_scrubs_every_secret() {
        let r = Redactor::new([
            "sk-ant-secret-1".to_owned(),
            "tok-secret-22".to_owned(),
            "x".to_owned(),
        ]);
        let mut e = RuntimeError::new(
            ErrorKind::Api,
            "bad key sk-ant-secret-1 and tok-secret-22 (x)",
        );
        e.request_id = Some("sk-ant-secret-1".into());
        let e = r.error(e);
        assert_eq!(e.message, "bad key (sensitive) and (sensitive) (x)");
        assert_eq!(e.request_id.as_deref(), Some("(sensitive)"));
        assert!(!format!("{r:?}").contains("sk-ant-secret-1"));
    }

    #[test]
    fn a_chosen_mark() {
        let r = Redactor::new(["sk-local-0123".to_owned()]).with_mark("[redacted]");
        assert_eq!(
            r.text("key sk-local-0123 refused".into()),
            "key [redacted] refused"
        );
        assert_eq!(Redactor::default().text("as is".into()), "as is");
    }

    #[test]
    fn substrings_overlaps_and_escaped_forms_are_masked() {
        let s = Secrets::default();
        s.add_env("A", "abcdefgh");
        s.add_env("B", "efghijkl");
        s.add_env("Q", "quo\"te-secret");
        let r = s.redactor();
        // Overlapping secrets leave no tail of either.
        assert_eq!(r.text("x abcdefghijkl y".into()), "x (sensitive) y");
        // A secret repeated over itself.
        s.add_env("R", "abababab");
        assert_eq!(r.text("ababababab!".into()), "(sensitive)!");
        // Inside JSON, a quote is escaped; both forms are found.
        let line = r.json_line(&json!({"t": "say quo\"te-secret", "n": 1}));
        assert_eq!(line, r#"{"n":1,"t":"say (sensitive)"}"#);
        assert_eq!(r.text(r#"say quo\"te-secret"#.into()), "say (sensitive)");
    }

    #[test]
    fn json_masks_strings_and_keys_and_stays_valid() {
        let s = Secrets::default();
        s.add_env("N", "12345678");
        let r = s.redactor();
        let mut v = json!({"count": 123456789, "12345678": ["id 12345678"]});
        r.json(&mut v);
        assert_eq!(
            v,
            json!({"count": 123456789, "(sensitive)": ["id (sensitive)"]})
        );
    }

    #[test]
    fn short_values_are_kept_and_reported() {
        let s = Secrets::default();
        s.add_env("REGION", "eu");
        s.add_env("TOKEN", "long-enough-token");
        assert_eq!(
            s.redactor().text("eu long-enough-token".into()),
            "eu (sensitive)"
        );
        assert_eq!(s.too_short(), [("REGION".to_string(), 2)]);
        s.add_env("BLANK", "          ");
        assert_eq!(s.redactor().text("a          b".into()), "a          b");
        assert_eq!(s.too_short().len(), 1);
    }

    #[test]
    fn linked_tables_share_what_they_learn_later() {
        let cli = Secrets::default();
        let manifest = Secrets::default();
        cli.link(&manifest);
        manifest.link(&cli); // a loop: ignored
        let r = cli.redactor();
        assert_eq!(r.text("later-secret-1".into()), "later-secret-1");
        manifest.add_env("LATER", "later-secret-1");
        assert_eq!(r.text("later-secret-1".into()), "(sensitive)");
        assert_eq!(cli.lookup("$LATER").as_deref(), Some("later-secret-1"));
        assert!(!format!("{cli:?}").contains("later-secret-1"));
    }

    #[test]
    fn keys_name_each_value_once() {
        let s = Secrets::default();
        s.add("session.s token", "same-value-123");
        s.add_env("TOKEN", "same-value-123");
        assert_eq!(s.lookup("$TOKEN").as_deref(), Some("same-value-123"));
        assert_eq!(s.lookup("#session.s token"), None);
        // Two defaults of one unset variable: the second gets a label.
        s.add_env("UNSET", "default-one-1");
        s.add_env("UNSET", "default-two-2");
        assert_eq!(s.lookup("$UNSET").as_deref(), Some("default-one-1"));
        let found = s.occurrences("default-two-2");
        assert!(found[0].key.starts_with("#UNSET="), "{found:?}");
    }
}

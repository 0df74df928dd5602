//! Scrubbing credentials out of text that leaves a client: error messages,
//! request ids echoed back, log lines.
//!
//! Knows strings and the API's error; what a secret is, each client says.

use std::sync::Arc;

use crate::api::RuntimeError;

/// What a secret becomes unless a client chooses otherwise.
pub const SENSITIVE: &str = "(sensitive)";

/// Replaces every known secret in a text by a mark.
#[derive(Clone)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
    mark: &'static str,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new([])
    }
}

/// Never shows the secrets.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .field("mark", &self.mark)
            .finish()
    }
}

impl Redactor {
    /// Secrets shorter than 8 characters are not real keys and are not
    /// scrubbed (replacing them would mangle every message).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Redactor {
            secrets: Arc::new(secrets.into_iter().filter(|s| s.len() >= 8).collect()),
            mark: SENSITIVE,
        }
    }

    /// Writes `mark` instead of [`SENSITIVE`].
    pub fn with_mark(mut self, mark: &'static str) -> Self {
        self.mark = mark;
        self
    }

    pub fn text(&self, mut text: String) -> String {
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), self.mark);
            }
        }
        text
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
}

//! Manifest errors that point into the source: file, line, column and a caret.
//! No error shows a value read with `env()`: see [`Diagnostic::redacted`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::redact::{Redactor, SENSITIVE};
use crate::terminal::escape_controls;

/// The text of every manifest file that was read, indexed by position.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<Arc<SourceFile>>,
}

#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl Sources {
    pub fn add(&mut self, path: PathBuf, text: String) -> usize {
        self.files.push(Arc::new(SourceFile { path, text }));
        self.files.len() - 1
    }

    pub fn path(&self, source: usize) -> &Path {
        &self.files[source].path
    }

    pub fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter().map(|f| f.as_ref())
    }

    fn line(&self, span: &Span) -> Option<&str> {
        let file = self.files.get(span.source)?;
        file.text.lines().nth(span.line.checked_sub(1)?)
    }
}

/// A position in a manifest file; lines and columns count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub source: usize,
    pub line: usize,
    pub column: usize,
}

impl Span {
    pub fn from_marked(span: &marked_yaml::Span) -> Option<Span> {
        span.start().map(|m| Span {
            source: m.source(),
            line: m.line(),
            column: m.column(),
        })
    }

    pub fn file_start(source: usize) -> Span {
        Span {
            source,
            line: 1,
            column: 1,
        }
    }
}

/// One problem in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    pub help: Option<String>,
    /// Secondary locations, e.g. where a duplicate was first declared.
    pub notes: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn at(span: Span, message: impl Into<String>) -> Self {
        Self::new(message, Some(span))
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, span: Span, note: impl Into<String>) -> Self {
        self.notes.push((span, note.into()));
        self
    }

    /// `self` with every secret in its text written `(sensitive)`.
    pub fn redacted(mut self, secrets: &[String]) -> Self {
        if secrets.is_empty() {
            return self;
        }
        let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
        // A secret that contains another is replaced first.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let bare = Redactor::new(secrets.iter().map(|s| s.to_string()));
        let redact = |text: String| {
            let mut text = text;
            for s in &secrets {
                // Messages quote values in backticks or as string literals;
                // quoted, even a short secret is recognisable.
                for quoted in [format!("`{s}`"), format!("{s:?}")] {
                    if text.contains(&quoted) {
                        text = text.replace(&quoted, SENSITIVE);
                    }
                }
            }
            bare.text(text)
        };
        self.message = redact(std::mem::take(&mut self.message));
        self.help = self.help.map(redact);
        for (_, note) in &mut self.notes {
            *note = redact(std::mem::take(note));
        }
        self
    }
}

/// Every problem found while loading a manifest, with the sources to render them.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub sources: Sources,
    pub items: Vec<Diagnostic>,
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            render_one(&mut out, &self.sources, d, color);
        }
        if self.items.len() > 1 {
            out.push_str(&format!(
                "\n{} problems found in the manifest; nothing was changed\n",
                self.items.len()
            ));
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render(false).trim_end())
    }
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Messages and source lines are escaped: a manifest from elsewhere may hold
/// control characters, and the only escape sequences here are the colours.
fn render_one(out: &mut String, sources: &Sources, d: &Diagnostic, color: bool) {
    out.push_str(&paint(color, "1;31", "error"));
    out.push_str(": ");
    out.push_str(&escape_controls(&d.message));
    out.push('\n');
    if let Some(span) = &d.span {
        render_location(out, sources, span, color);
    }
    for (span, note) in &d.notes {
        out.push_str(&format!("   = note: {}\n", escape_controls(note)));
        render_location(out, sources, span, color);
    }
    if let Some(help) = &d.help {
        out.push_str(&format!(
            "   = {}: {}\n",
            paint(color, "1;36", "help"),
            escape_controls(help)
        ));
    }
}

fn render_location(out: &mut String, sources: &Sources, span: &Span, color: bool) {
    out.push_str(&format!(
        "  --> {}:{}:{}\n",
        escape_controls(&sources.path(span.source).display().to_string()),
        span.line,
        span.column
    ));
    if let Some(line) = sources.line(span) {
        let number = span.line.to_string();
        let pad = " ".repeat(number.len());
        let before: String = line.chars().take(span.column.saturating_sub(1)).collect();
        // Measured on the escaped text, so the caret stays under its place.
        let caret_pad: String = escape_controls(&before)
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let line = escape_controls(line);
        out.push_str(&format!("{pad} |\n{number} | {line}\n{pad} | {caret_pad}"));
        out.push_str(&paint(color, "1;31", "^"));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::Diagnostic;

    #[test]
    fn secrets_are_redacted_from_every_part_of_a_diagnostic() {
        let secrets = ["NETSECRET-zz".to_string(), "42".to_string(), String::new()];
        let d = Diagnostic::new("unknown variant `NETSECRET-zz`, expected `limited`", None)
            .help("got \"42\"; not NETSECRET-zz")
            .note(super::Span::file_start(0), "`42` came from here; tools[42]")
            .redacted(&secrets);
        assert_eq!(d.message, "unknown variant (sensitive), expected `limited`");
        assert_eq!(d.help.as_deref(), Some("got (sensitive); not (sensitive)"));
        // A short secret is only recognised where it is quoted.
        assert_eq!(d.notes[0].1, "(sensitive) came from here; tools[42]");
    }
}

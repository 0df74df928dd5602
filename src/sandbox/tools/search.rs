//! The search tools `glob` (paths by pattern) and `grep` (contents by
//! regular expression) over the sandbox's file listing. They must not walk
//! the file system themselves; the sandbox lists and reads.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::pattern::{Glob, GLOB_MAX_CHARS};
use super::{optional_str, required_str, Input, ToolResult, GLOB_MAX_PATHS, GREP_MAX_MATCHES};
use crate::sandbox::{Sandbox, SandboxError};

/// Longest line text in `grep` output.
const GREP_LINE_CHARS: usize = 1000;
/// Files larger than this are not searched by `grep`.
const GREP_MAX_FILE: usize = 10 * 1024 * 1024;
/// Characters of a pattern quoted in an error message.
const QUOTED_PATTERN_CHARS: usize = 100;

pub(super) fn glob_definition() -> Value {
    json!({
        "name": "glob",
        "description": format!(
            "Lists the files whose path (relative to `path`) matches a glob pattern, sorted. \
             Supports `*`, `?`, `**` (any number of directories), `[abc]`, `[a-z]`, `[!abc]`, \
             `[[:alpha:]]` and `{{a,b}}` (nested too); `\\` escapes a character outside `[...]`. \
             Patterns are at most {GLOB_MAX_CHARS} characters. Paths are returned relative to the \
             workspace root."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Glob pattern, e.g. `**/*.rs`."},
                "path": {"type": "string", "description": "Directory to search, relative to the workspace root (default: the root)."}
            },
            "required": ["pattern"]
        }
    })
}

pub(super) fn grep_definition() -> Value {
    json!({
        "name": "grep",
        "description": "Searches the contents of the files below `path` (or the file `path`) with a regular \
            expression (Rust regex syntax) and returns matching lines as `path:line:text`, at most 500. \
            Binary files are skipped.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Regular expression."},
                "path": {"type": "string", "description": "File or directory to search, relative to the workspace root (default: the root)."}
            },
            "required": ["pattern"]
        }
    })
}

/// `dir` normalized for joining: "" for the root, no trailing slash.
fn base_dir(path: Option<&str>) -> String {
    let trimmed = path.unwrap_or("").trim_end_matches('/');
    let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
    if trimmed == "." {
        String::new()
    } else {
        trimmed.to_string()
    }
}

fn join(base: &str, rel: &str) -> String {
    if base.is_empty() {
        rel.to_string()
    } else if rel.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

/// `pattern` for an error message, cut short if long.
fn quoted(pattern: &str) -> String {
    match pattern.char_indices().nth(QUOTED_PATTERN_CHARS) {
        Some((cut, _)) => format!("{}…", &pattern[..cut]),
        None => pattern.to_string(),
    }
}

pub(super) async fn glob(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let pattern = required_str(input, "pattern")?;
    let path = optional_str(input, "path")?;
    let matcher = Glob::new(pattern).map_err(|e| {
        ToolResult::error(format!("invalid glob pattern `{}`: {e}", quoted(pattern)))
    })?;
    let base = base_dir(path);
    let files = sandbox.list_files(&base).await?;
    let matched: Vec<String> = files
        .iter()
        .filter(|f| matcher.matches(f))
        .map(|f| join(&base, f))
        .collect();
    if matched.is_empty() {
        return Ok(ToolResult::ok(format!("No files match `{pattern}`.")));
    }
    let mut out = matched
        .iter()
        .take(GLOB_MAX_PATHS)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if matched.len() > GLOB_MAX_PATHS {
        out.push_str(&format!(
            "\n[... {} more paths not shown; narrow the pattern ...]",
            matched.len() - GLOB_MAX_PATHS
        ));
    }
    Ok(ToolResult::ok(out))
}

fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(pattern).or_else(|e| {
        // Without Unicode case folding in this build, `(?i)` needs ASCII mode.
        if pattern.contains("(?i") {
            regex::Regex::new(&format!("(?-u){pattern}")).map_err(|_| e)
        } else {
            Err(e)
        }
    })
}

/// The files `grep` searches: those below the directory `base`, or else the
/// file `base` itself.
async fn files_to_search(sandbox: &dyn Sandbox, base: &str) -> Result<Vec<String>, ToolResult> {
    match sandbox.list_files(base).await {
        Ok(files) => Ok(files.iter().map(|f| join(base, f)).collect()),
        Err(e @ SandboxError::Escape(_)) => Err(e.into()),
        Err(e) => match sandbox.read_file(base, 0).await {
            Ok(_) if !base.is_empty() => Ok(vec![base.to_string()]),
            _ => Err(e.into()),
        },
    }
}

/// A file's text for `grep`, or why it is skipped (`None`: silently).
async fn searchable_text(
    sandbox: &dyn Sandbox,
    file: &str,
) -> Result<String, Option<&'static str>> {
    let bytes = match sandbox.read_file(file, GREP_MAX_FILE + 1).await {
        Ok(b) => b,
        Err(SandboxError::Escape(_)) => return Err(Some("links outside the workspace")),
        // Symlinked directories are listed but not searched.
        Err(SandboxError::Io { message, .. }) if message == "is a directory" => return Err(None),
        Err(SandboxError::Io { message, .. }) if message.starts_with("is not a regular file") => {
            return Err(Some("not regular files"))
        }
        Err(_) => return Err(Some("unreadable")),
    };
    if bytes.len() > GREP_MAX_FILE {
        return Err(Some("larger than 10 MB"));
    }
    match String::from_utf8(bytes) {
        Ok(t) if !t.contains('\0') => Ok(t),
        _ => Err(None), // binary
    }
}

pub(super) async fn grep(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let pattern = required_str(input, "pattern")?;
    let path = optional_str(input, "path")?;
    let regex = compile_regex(pattern)
        .map_err(|e| ToolResult::error(format!("invalid regex `{pattern}`: {e}")))?;
    let base = base_dir(path);
    let files = files_to_search(sandbox, &base).await?;
    let mut out = String::new();
    let mut matches = 0;
    let mut truncated = false;
    let mut skipped: HashMap<&'static str, usize> = HashMap::new();
    'files: for file in &files {
        let text = match searchable_text(sandbox, file).await {
            Ok(text) => text,
            Err(reason) => {
                if let Some(reason) = reason {
                    *skipped.entry(reason).or_default() += 1;
                }
                continue;
            }
        };
        for (i, line) in text.lines().enumerate() {
            if !regex.is_match(line) {
                continue;
            }
            if matches == GREP_MAX_MATCHES {
                truncated = true;
                break 'files;
            }
            matches += 1;
            let shown: String = line.chars().take(GREP_LINE_CHARS).collect();
            let ellipsis = if shown.len() < line.len() {
                " [...]"
            } else {
                ""
            };
            out.push_str(&format!("{file}:{}:{shown}{ellipsis}\n", i + 1));
        }
    }
    if matches == 0 {
        out.push_str("No matches found.\n");
    }
    if truncated {
        out.push_str(&format!(
            "[... stopped after {GREP_MAX_MATCHES} matches; narrow the pattern or path ...]\n"
        ));
    }
    let mut reasons: Vec<_> = skipped.into_iter().collect();
    reasons.sort();
    for (reason, n) in reasons {
        out.push_str(&format!("[{n} file(s) skipped: {reason}]\n"));
    }
    Ok(ToolResult::ok(out.trim_end().to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use serde_json::json;

    use super::super::test_support::{err, ok, workspace};
    use crate::sandbox::Sandbox;

    #[tokio::test]
    async fn glob_matches_files() {
        let (_d, ws) = workspace();
        for f in [
            "src/main.rs",
            "src/lib/mod.rs",
            "src/lib/a.txt",
            "README.md",
            "Cargo.toml",
            "b1.rs",
            "b2.rs",
        ] {
            ws.write_file(f, b"x").await.unwrap();
        }
        let g = |pattern: &str| json!({"pattern": pattern});
        assert_eq!(
            ok(&ws, "glob", g("**/*.rs")).await,
            "b1.rs\nb2.rs\nsrc/lib/mod.rs\nsrc/main.rs"
        );
        assert_eq!(ok(&ws, "glob", g("*.rs")).await, "b1.rs\nb2.rs");
        assert_eq!(
            ok(&ws, "glob", g("src/**")).await,
            "src/lib/a.txt\nsrc/lib/mod.rs\nsrc/main.rs"
        );
        assert_eq!(
            ok(&ws, "glob", g("*.{md,toml}")).await,
            "Cargo.toml\nREADME.md"
        );
        assert_eq!(ok(&ws, "glob", g("b[!1].rs")).await, "b2.rs");
        let scoped = json!({"pattern": "**/*.rs", "path": "src/lib"});
        assert_eq!(ok(&ws, "glob", scoped).await, "src/lib/mod.rs");
        let scoped = json!({"pattern": "*", "path": "./src/"});
        assert_eq!(ok(&ws, "glob", scoped).await, "src/main.rs");
        assert!(ok(&ws, "glob", g("*.py")).await.contains("No files match"));
        assert!(err(&ws, "glob", json!({"pattern": "*", "path": "../"}))
            .await
            .contains("outside"));
        assert!(err(&ws, "glob", g("[abc")).await.contains("invalid glob"));
        assert!(err(&ws, "glob", json!({"pattern": "*", "path": "nope"}))
            .await
            .contains("nope"));
    }

    #[tokio::test]
    async fn grep_searches_contents() {
        let (_d, ws) = workspace();
        ws.write_file("src/a.rs", b"fn main() {\n    println!(\"hello\");\n}\n")
            .await
            .unwrap();
        ws.write_file("src/b.rs", b"// hello again\nfn helper() {}\n")
            .await
            .unwrap();
        ws.write_file("bin.dat", b"hello\0binary").await.unwrap();
        ws.write_file("notes.md", b"Hello, World\n").await.unwrap();
        let g = |pattern: &str| json!({"pattern": pattern});
        assert_eq!(
            ok(&ws, "grep", g("hello")).await,
            "src/a.rs:2:    println!(\"hello\");\nsrc/b.rs:1:// hello again"
        );
        assert_eq!(
            ok(&ws, "grep", g(r"fn \w+\(")).await,
            "src/a.rs:1:fn main() {\nsrc/b.rs:2:fn helper() {}"
        );
        assert_eq!(
            ok(&ws, "grep", g("(?i)HELLO, world")).await,
            "notes.md:1:Hello, World"
        );
        assert_eq!(
            ok(&ws, "grep", json!({"pattern": "hello", "path": "src/b.rs"})).await,
            "src/b.rs:1:// hello again"
        );
        assert_eq!(
            ok(&ws, "grep", json!({"pattern": "fn", "path": "src/"})).await,
            "src/a.rs:1:fn main() {\nsrc/b.rs:2:fn helper() {}"
        );
        assert_eq!(
            ok(&ws, "grep", g("nothing-like-this")).await,
            "No matches found."
        );
        assert!(err(&ws, "grep", g("(unclosed"))
            .await
            .contains("invalid regex"));
        assert!(err(&ws, "grep", json!({"pattern": "x", "path": "/etc"}))
            .await
            .contains("outside"));
        assert!(err(&ws, "grep", json!({"pattern": "x", "path": "missing"}))
            .await
            .contains("missing"));
        symlink("/etc", ws.root().join("etc")).unwrap();
        assert!(err(
            &ws,
            "grep",
            json!({"pattern": "root", "path": "etc/passwd"})
        )
        .await
        .contains("outside"));
        // The listed link itself is unreadable (outside), so it is skipped.
        assert!(ok(&ws, "grep", g("root"))
            .await
            .contains("1 file(s) skipped: links outside the workspace"));
        symlink("src", ws.root().join("src_link")).unwrap();
        assert_eq!(
            ok(&ws, "grep", json!({"pattern": "helper"}))
                .await
                .lines()
                .next()
                .unwrap(),
            "src/b.rs:2:fn helper() {}"
        );
    }

    #[tokio::test]
    async fn grep_stops_at_500_matches() {
        let (_d, ws) = workspace();
        let text: String = (0..800).map(|i| format!("match {i}\n")).collect();
        ws.write_file("many", text.as_bytes()).await.unwrap();
        let out = ok(&ws, "grep", json!({"pattern": "match"})).await;
        assert_eq!(out.lines().filter(|l| l.starts_with("many:")).count(), 500);
        assert!(out.contains("stopped after 500 matches"));
    }

    #[tokio::test]
    async fn glob_answers_pathological_patterns_quickly() {
        let (_d, ws) = workspace();
        ws.write_file(&"b".repeat(22), b"x").await.unwrap();
        let started = std::time::Instant::now();
        for n in 22..=26 {
            let pattern = "{a,b}".repeat(n);
            let out = ok(&ws, "glob", json!({ "pattern": pattern })).await;
            let expected = if n == 22 {
                "b".repeat(22)
            } else {
                format!("No files match `{pattern}`.")
            };
            assert_eq!(out, expected);
        }
        let message = err(&ws, "glob", json!({"pattern": "**/".repeat(30_000)})).await;
        assert!(
            message.starts_with("invalid glob pattern `**/**/"),
            "{message}"
        );
        assert!(message.contains("more than the 1024 allowed"), "{message}");
        assert!(message.len() < 300, "{message}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

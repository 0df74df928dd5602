//! The built-in toolset `agent_toolset_20260401` (bash, read, write, edit,
//! glob, grep) over any [`Sandbox`].
//!
//! Every tool reaches files only through the sandbox, so path confinement is
//! the sandbox's (see `local.rs`); an escape comes back as an error result
//! carrying the [`SandboxError`] message. Bad input (unknown tool, missing
//! field, wrong type) is an error result too, never a panic.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{Sandbox, SandboxError};

/// The toolset's type name, as in agent definitions.
pub const TOOLSET: &str = "agent_toolset_20260401";

/// The tools this module runs.
pub const BUILTIN: [&str; 6] = ["bash", "read", "write", "edit", "glob", "grep"];

/// Largest `read` output.
pub const READ_LIMIT: usize = 256 * 1024;
/// Most `grep` matches reported.
pub const GREP_MAX_MATCHES: usize = 500;
/// Most `glob` paths reported.
pub const GLOB_MAX_PATHS: usize = 1000;
/// Longest line text in `grep` output.
const GREP_LINE_CHARS: usize = 1000;
/// Files larger than this are not searched by `grep`.
const GREP_MAX_FILE: usize = 10 * 1024 * 1024;

/// A tool's result, for a `tool_result` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub content: String,
    pub is_error: bool,
}

impl ToolResult {
    fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }

    fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
        }
    }
}

impl From<SandboxError> for ToolResult {
    fn from(e: SandboxError) -> Self {
        Self::error(e.to_string())
    }
}

/// Messages-API tool definitions (`{name, description, input_schema}`) of
/// the six tools.
pub fn definitions() -> Vec<Value> {
    vec![
        json!({
            "name": "bash",
            "description": "Runs a command with `bash -c` in the workspace directory and returns its \
                combined stdout and stderr (the last 100 KB). Each call starts a fresh shell: \
                variables and `cd` do not carry over. A non-zero exit code is reported as an error. \
                The command is killed when it runs past its time limit.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command to run."},
                    "restart": {"type": "boolean", "description": "Restart the shell. Every command already runs in a fresh shell, so this only acknowledges."},
                    "timeout_ms": {"type": "integer", "minimum": 1, "description": "Time limit in milliseconds (capped by the session's limit)."}
                }
            }
        }),
        json!({
            "name": "read",
            "description": "Reads a text file of the workspace and returns it with line numbers (like `cat -n`). \
                `view_range` [start, end] selects lines (1-based, inclusive; end -1 means to the end of the file). \
                Output is capped at 256 KB; binary files are refused.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "Path relative to the workspace root."},
                    "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2, "description": "[start, end] line numbers, 1-based and inclusive; end -1 reads to the end."}
                },
                "required": ["file_path"]
            }
        }),
        json!({
            "name": "write",
            "description": "Creates or overwrites a file of the workspace with `content`, creating parent directories.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "Path relative to the workspace root."},
                    "content": {"type": "string", "description": "The complete new contents of the file."}
                },
                "required": ["file_path", "content"]
            }
        }),
        json!({
            "name": "edit",
            "description": "Replaces `old_string` with `new_string` in a file. `old_string` must occur exactly once \
                (include surrounding lines to make it unique) unless `replace_all` is true.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "file_path": {"type": "string", "description": "Path relative to the workspace root."},
                    "old_string": {"type": "string", "description": "The exact text to replace."},
                    "new_string": {"type": "string", "description": "The replacement text."},
                    "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."}
                },
                "required": ["file_path", "old_string", "new_string"]
            }
        }),
        json!({
            "name": "glob",
            "description": "Lists the files whose path (relative to `path`) matches a glob pattern, sorted. \
                Supports `*`, `?`, `**` (any number of directories), `[abc]`, `[a-z]`, `[!abc]` and `{a,b}`. \
                Paths are returned relative to the workspace root.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "Glob pattern, e.g. `**/*.rs`."},
                    "path": {"type": "string", "description": "Directory to search, relative to the workspace root (default: the root)."}
                },
                "required": ["pattern"]
            }
        }),
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
        }),
    ]
}

/// Runs the built-in tool `name` with `input`; `deadline` bounds `bash`.
pub async fn run(
    sandbox: &dyn Sandbox,
    name: &str,
    input: &Value,
    deadline: Duration,
) -> ToolResult {
    let Some(input) = input.as_object() else {
        return ToolResult::error(format!(
            "invalid input for `{name}`: expected a JSON object"
        ));
    };
    let result = match name {
        "bash" => bash(sandbox, input, deadline).await,
        "read" => read(sandbox, input).await,
        "write" => write(sandbox, input).await,
        "edit" => edit(sandbox, input).await,
        "glob" => glob(sandbox, input).await,
        "grep" => grep(sandbox, input).await,
        _ => {
            return ToolResult::error(format!(
                "unknown tool `{name}`; the built-in tools are {}",
                BUILTIN.join(", ")
            ))
        }
    };
    result.unwrap_or_else(|e| e)
}

type Input = Map<String, Value>;

fn type_error(field: &str, expected: &str) -> ToolResult {
    ToolResult::error(format!("invalid input: `{field}` must be {expected}"))
}

fn required_str<'a>(input: &'a Input, field: &str) -> Result<&'a str, ToolResult> {
    match input.get(field) {
        None | Some(Value::Null) => Err(ToolResult::error(format!(
            "invalid input: missing required field `{field}`"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(type_error(field, "a string")),
    }
}

fn optional_str<'a>(input: &'a Input, field: &str) -> Result<Option<&'a str>, ToolResult> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(field, "a string")),
    }
}

fn optional_bool(input: &Input, field: &str) -> Result<bool, ToolResult> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(type_error(field, "a boolean")),
    }
}

async fn bash(
    sandbox: &dyn Sandbox,
    input: &Input,
    deadline: Duration,
) -> Result<ToolResult, ToolResult> {
    let restart = optional_bool(input, "restart")?;
    let command = optional_str(input, "command")?;
    let limit = match input.get("timeout_ms") {
        None | Some(Value::Null) => deadline,
        Some(v) => match v.as_f64() {
            Some(ms) if ms >= 1.0 && ms.fract() == 0.0 => {
                deadline.min(Duration::from_millis(ms as u64))
            }
            _ => return Err(type_error("timeout_ms", "a positive integer")),
        },
    };
    let command = match command {
        Some(c) if !c.trim().is_empty() => c,
        _ if restart => {
            return Ok(ToolResult::ok(
                "Shell restarted (every command runs in a fresh shell).",
            ))
        }
        Some(_) => return Err(ToolResult::error("invalid input: `command` is empty")),
        None => {
            return Err(ToolResult::error(
                "invalid input: missing required field `command`",
            ))
        }
    };
    let out = sandbox.run(command, limit, &mut |_| {}).await?;
    let mut content = out.output;
    let mut note = |line: String| {
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(&line);
    };
    let is_error = if out.timed_out {
        note(format!(
            "[command timed out after {} ms and was killed]",
            limit.as_millis()
        ));
        true
    } else {
        match out.exit_code {
            Some(0) => false,
            Some(code) => {
                note(format!("exit code {code}"));
                true
            }
            None => {
                note("[command was terminated by a signal]".to_string());
                true
            }
        }
    };
    if content.is_empty() {
        content = "(no output)".to_string();
    }
    Ok(ToolResult { content, is_error })
}

/// The file as text, or an error result for binary files.
async fn read_text(sandbox: &dyn Sandbox, path: &str) -> Result<String, ToolResult> {
    let bytes = sandbox.read_file(path).await?;
    if bytes.contains(&0) {
        return Err(ToolResult::error(format!("`{path}` is a binary file")));
    }
    String::from_utf8(bytes)
        .map_err(|_| ToolResult::error(format!("`{path}` is a binary file (not UTF-8 text)")))
}

async fn read(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let path = required_str(input, "file_path")?;
    let range = match input.get("view_range") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => match items
            .iter()
            .map(Value::as_i64)
            .collect::<Option<Vec<_>>>()
            .as_deref()
        {
            Some(&[start, end]) => Some((start, end)),
            _ => {
                return Err(type_error(
                    "view_range",
                    "an array of two integers [start, end]",
                ))
            }
        },
        Some(_) => {
            return Err(type_error(
                "view_range",
                "an array of two integers [start, end]",
            ))
        }
    };
    let text = read_text(sandbox, path).await?;
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    let (first, last) = match range {
        None => (1, total),
        Some((start, end)) => {
            if start < 1 {
                return Err(ToolResult::error(format!(
                    "invalid view_range: start {start} must be at least 1"
                )));
            }
            if end != -1 && end < start {
                return Err(ToolResult::error(format!(
                    "invalid view_range: end {end} is before start {start} (use -1 to read to the end)"
                )));
            }
            let start = start as usize;
            if start > total.max(1) {
                return Err(ToolResult::error(format!(
                    "invalid view_range: start {start} is past the end of `{path}` ({total} lines)"
                )));
            }
            let end = if end == -1 {
                total
            } else {
                (end as usize).min(total)
            };
            (start, end)
        }
    };
    if total == 0 {
        return Ok(ToolResult::ok(format!("(`{path}` is empty)")));
    }
    let mut out = String::new();
    for (number, line) in lines
        .iter()
        .enumerate()
        .take(last)
        .skip(first - 1)
        .map(|(i, l)| (i + 1, l))
    {
        let entry = format!("{number:>6}\t{line}\n");
        if out.len() + entry.len() > READ_LIMIT {
            out.push_str(&format!(
                "[... output capped at 256 KB after line {}; `{path}` has {total} lines, use view_range to read more ...]\n",
                number - 1
            ));
            break;
        }
        out.push_str(&entry);
    }
    Ok(ToolResult::ok(out))
}

async fn write(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let path = required_str(input, "file_path")?;
    let content = required_str(input, "content")?;
    sandbox.write_file(path, content.as_bytes()).await?;
    Ok(ToolResult::ok(format!(
        "Wrote {} bytes to `{path}`.",
        content.len()
    )))
}

async fn edit(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let path = required_str(input, "file_path")?;
    let old = required_str(input, "old_string")?;
    let new = required_str(input, "new_string")?;
    let replace_all = optional_bool(input, "replace_all")?;
    if old.is_empty() {
        return Err(ToolResult::error("invalid input: `old_string` is empty"));
    }
    if old == new {
        return Err(ToolResult::error(
            "`old_string` and `new_string` are identical; nothing to change",
        ));
    }
    let text = read_text(sandbox, path).await?;
    let count = text.matches(old).count();
    match count {
        0 => {
            return Err(ToolResult::error(format!(
                "`old_string` was not found in `{path}` (0 matches)"
            )))
        }
        1 => {}
        n if !replace_all => {
            return Err(ToolResult::error(format!(
            "`old_string` occurs {n} times in `{path}`; include more context to make it unique, \
                 or set replace_all to replace all {n}"
        )))
        }
        _ => {}
    }
    sandbox
        .write_file(path, text.replace(old, new).as_bytes())
        .await?;
    let noun = if count == 1 {
        "occurrence"
    } else {
        "occurrences"
    };
    Ok(ToolResult::ok(format!(
        "Replaced {count} {noun} in `{path}`."
    )))
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

async fn glob(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let pattern = required_str(input, "pattern")?;
    let path = optional_str(input, "path")?;
    let matcher = Glob::new(pattern)
        .map_err(|e| ToolResult::error(format!("invalid glob pattern `{pattern}`: {e}")))?;
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

async fn grep(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let pattern = required_str(input, "pattern")?;
    let path = optional_str(input, "path")?;
    let regex = compile_regex(pattern)
        .map_err(|e| ToolResult::error(format!("invalid regex `{pattern}`: {e}")))?;
    let base = base_dir(path);
    // A directory to walk, or else a single file.
    let files: Vec<String> = match sandbox.list_files(&base).await {
        Ok(files) => files.iter().map(|f| join(&base, f)).collect(),
        Err(e @ SandboxError::Escape(_)) => return Err(e.into()),
        Err(e) => match sandbox.read_file(&base).await {
            Ok(_) if !base.is_empty() => vec![base.clone()],
            _ => return Err(e.into()),
        },
    };
    let mut out = String::new();
    let mut matches = 0;
    let mut truncated = false;
    let mut skipped: HashMap<&'static str, usize> = HashMap::new();
    'files: for file in &files {
        let bytes = match sandbox.read_file(file).await {
            Ok(b) => b,
            Err(SandboxError::Escape(_)) => {
                *skipped.entry("links outside the workspace").or_default() += 1;
                continue;
            }
            // Symlinked directories are listed but not searched.
            Err(SandboxError::Io { message, .. }) if message == "is a directory" => continue,
            Err(_) => {
                *skipped.entry("unreadable").or_default() += 1;
                continue;
            }
        };
        if bytes.len() > GREP_MAX_FILE {
            *skipped.entry("larger than 10 MB").or_default() += 1;
            continue;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) if !t.contains('\0') => t,
            _ => continue, // binary
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

/// A compiled glob: `*` and `?` do not cross `/`; `**` as a whole segment
/// matches any number of directories; `[abc]`, `[a-z]`, `[!a]`/`[^a]`; `{a,b}`
/// alternatives; `\` escapes.
#[derive(Debug, Clone)]
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**/`: empty or anything ending in `/`.
    Dirs,
    /// `**` at the end: anything.
    All,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Alternatives of a pattern with `{a,b}` groups expanded (nested too).
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    // Find the first top-level `{` (not escaped, not in a class) and its match.
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '{' if !in_class => {
                let mut depth = 0;
                let mut parts = Vec::new();
                let mut start = i + 1;
                let mut j = i;
                while j < chars.len() {
                    match chars[j] {
                        '\\' => j += 1,
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                parts.push(chars[start..j].iter().collect::<String>());
                                break;
                            }
                        }
                        ',' if depth == 1 => {
                            parts.push(chars[start..j].iter().collect::<String>());
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unclosed `{`".to_string());
                }
                let prefix: String = chars[..i].iter().collect();
                let suffix: String = chars[j + 1..].iter().collect();
                let mut out = Vec::new();
                for part in parts {
                    out.extend(expand_braces(&format!("{prefix}{part}{suffix}"))?);
                }
                return Ok(out);
            }
            _ => {}
        }
        i += 1;
    }
    Ok(vec![pattern.to_string()])
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = *chars.get(i + 1).ok_or("trailing `\\`")?;
                tokens.push(Token::Literal(c));
                i += 2;
            }
            '?' => {
                tokens.push(Token::One);
                i += 1;
            }
            '*' => {
                let mut j = i;
                while j < chars.len() && chars[j] == '*' {
                    j += 1;
                }
                let segment_start = i == 0 || chars[i - 1] == '/';
                if j - i >= 2 && segment_start && j == chars.len() {
                    tokens.push(Token::All);
                    i = j;
                } else if j - i >= 2 && segment_start && chars[j] == '/' {
                    tokens.push(Token::Dirs);
                    i = j + 1;
                } else {
                    tokens.push(Token::Star);
                    i = j;
                }
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('!' | '^'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(j) else {
                        return Err("unclosed `[`".to_string());
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let c = if c == '\\' {
                        j += 1;
                        *chars.get(j).ok_or("unclosed `[`")?
                    } else {
                        c
                    };
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']')
                    {
                        let end = chars[j + 2];
                        if end < c {
                            return Err(format!("invalid range `{c}-{end}`"));
                        }
                        ranges.push((c, end));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                tokens.push(Token::Class { negated, ranges });
                i = j + 1;
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// Whether `tokens` match all of `path`; memoized over (token, char) states.
fn matches_tokens(tokens: &[Token], path: &[char]) -> bool {
    let width = path.len() + 1;
    let mut failed = vec![false; (tokens.len() + 1) * width];
    fn go(
        tokens: &[Token],
        path: &[char],
        t: usize,
        s: usize,
        failed: &mut Vec<bool>,
        width: usize,
    ) -> bool {
        if failed[t * width + s] {
            return false;
        }
        let result = match tokens.get(t) {
            None => s == path.len(),
            Some(token) => match token {
                Token::Literal(c) => {
                    path.get(s) == Some(c) && go(tokens, path, t + 1, s + 1, failed, width)
                }
                Token::One => {
                    path.get(s).is_some_and(|&c| c != '/')
                        && go(tokens, path, t + 1, s + 1, failed, width)
                }
                Token::Class { negated, ranges } => {
                    path.get(s).is_some_and(|&c| {
                        c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                    }) && go(tokens, path, t + 1, s + 1, failed, width)
                }
                Token::Star => {
                    go(tokens, path, t + 1, s, failed, width)
                        || (path.get(s).is_some_and(|&c| c != '/')
                            && go(tokens, path, t, s + 1, failed, width))
                }
                Token::All => (s..=path.len()).any(|k| go(tokens, path, t + 1, k, failed, width)),
                Token::Dirs => {
                    go(tokens, path, t + 1, s, failed, width)
                        || (s + 1..=path.len()).any(|k| {
                            path[k - 1] == '/' && go(tokens, path, t + 1, k, failed, width)
                        })
                }
            },
        };
        if !result {
            failed[t * width + s] = true;
        }
        result
    }
    go(tokens, path, 0, 0, &mut failed, width)
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
        let alternatives = expand_braces(pattern)?
            .iter()
            .map(|p| tokenize(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { alternatives })
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        self.alternatives
            .iter()
            .any(|tokens| matches_tokens(tokens, &chars))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::local::{Workspace, WorkspaceOptions};
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path().join("ws"), WorkspaceOptions::default()).unwrap();
        (dir, ws)
    }

    async fn call(ws: &Workspace, name: &str, input: Value) -> ToolResult {
        run(ws, name, &input, Duration::from_secs(20)).await
    }

    async fn ok(ws: &Workspace, name: &str, input: Value) -> String {
        let r = call(ws, name, input).await;
        assert!(!r.is_error, "{}", r.content);
        r.content
    }

    async fn err(ws: &Workspace, name: &str, input: Value) -> String {
        let r = call(ws, name, input).await;
        assert!(r.is_error, "expected an error, got {}", r.content);
        r.content
    }

    #[test]
    fn definitions_cover_the_builtin_tools() {
        let defs = definitions();
        let names: Vec<&str> = defs.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, BUILTIN);
        for d in &defs {
            assert!(d["description"].as_str().unwrap().len() > 20);
            assert_eq!(d["input_schema"]["type"], "object");
            assert!(d["input_schema"]["properties"].is_object());
        }
        let edit = &defs[3]["input_schema"];
        assert_eq!(
            edit["required"],
            json!(["file_path", "old_string", "new_string"])
        );
        assert_eq!(edit["properties"]["replace_all"]["type"], "boolean");
        assert_eq!(
            defs[0]["input_schema"]["properties"]["timeout_ms"]["type"],
            "integer"
        );
        assert_eq!(
            defs[1]["input_schema"]["properties"]["view_range"]["type"],
            "array"
        );
    }

    #[tokio::test]
    async fn bad_input_is_an_error_not_a_panic() {
        let (_d, ws) = workspace();
        assert!(err(&ws, "web_fetch", json!({}))
            .await
            .contains("unknown tool `web_fetch`"));
        assert!(err(&ws, "read", json!("x")).await.contains("JSON object"));
        assert!(err(&ws, "read", json!({}))
            .await
            .contains("missing required field `file_path`"));
        assert!(err(&ws, "read", json!({"file_path": 3}))
            .await
            .contains("`file_path` must be a string"));
        assert!(err(&ws, "write", json!({"file_path": "a"}))
            .await
            .contains("`content`"));
        assert!(
            err(&ws, "edit", json!({"file_path": "a", "old_string": "x"}))
                .await
                .contains("`new_string`")
        );
        assert!(err(
            &ws,
            "edit",
            json!({"file_path": "a", "old_string": "x", "new_string": "y", "replace_all": "yes"})
        )
        .await
        .contains("`replace_all` must be a boolean"));
        assert!(err(&ws, "glob", json!({"pattern": 1}))
            .await
            .contains("`pattern`"));
        assert!(err(&ws, "grep", json!({"pattern": "a", "path": []}))
            .await
            .contains("`path`"));
        assert!(err(&ws, "bash", json!({})).await.contains("`command`"));
        assert!(
            err(&ws, "bash", json!({"command": "true", "timeout_ms": "5"}))
                .await
                .contains("timeout_ms")
        );
        assert!(
            err(&ws, "bash", json!({"command": "true", "timeout_ms": -5}))
                .await
                .contains("timeout_ms")
        );
        assert!(
            err(&ws, "read", json!({"file_path": "a", "view_range": [1]}))
                .await
                .contains("view_range")
        );
        assert!(err(
            &ws,
            "read",
            json!({"file_path": "a", "view_range": ["1", 2]})
        )
        .await
        .contains("view_range"));
    }

    #[tokio::test]
    async fn bash_runs_commands() {
        let (_d, ws) = workspace();
        assert_eq!(
            ok(
                &ws,
                "bash",
                json!({"command": "echo hello; echo there >&2"})
            )
            .await,
            "hello\nthere\n"
        );
        assert_eq!(
            ok(&ws, "bash", json!({"command": "true"})).await,
            "(no output)"
        );
        let out = err(&ws, "bash", json!({"command": "echo partial; exit 7"})).await;
        assert_eq!(out, "partial\nexit code 7");
        let out = err(&ws, "bash", json!({"command": "printf x; exit 1"})).await;
        assert_eq!(out, "x\nexit code 1");
        assert!(ok(&ws, "bash", json!({"restart": true}))
            .await
            .contains("restarted"));
        assert_eq!(
            ok(&ws, "bash", json!({"command": "echo a", "restart": true})).await,
            "a\n"
        );
        // Files written by bash are visible to the file tools, and back.
        ok(
            &ws,
            "bash",
            json!({"command": "mkdir -p d && echo from-bash > d/f"}),
        )
        .await;
        assert!(ok(&ws, "read", json!({"file_path": "d/f"}))
            .await
            .contains("from-bash"));
    }

    #[tokio::test]
    async fn bash_timeout_ms_caps_the_deadline() {
        let (_d, ws) = workspace();
        let started = std::time::Instant::now();
        let out = err(
            &ws,
            "bash",
            json!({"command": "echo before; sleep 30", "timeout_ms": 300}),
        )
        .await;
        assert!(out.starts_with("before\n"), "{out}");
        assert!(out.contains("timed out after 300 ms"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // And the session deadline caps timeout_ms.
        let started = std::time::Instant::now();
        let r = run(
            &ws,
            "bash",
            &json!({"command": "sleep 30", "timeout_ms": 600000}),
            Duration::from_millis(300),
        )
        .await;
        assert!(
            r.is_error && r.content.contains("timed out"),
            "{}",
            r.content
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn read_numbers_lines() {
        let (_d, ws) = workspace();
        ws.write_file("f.txt", b"one\ntwo\r\nthree\nfour")
            .await
            .unwrap();
        assert_eq!(
            ok(&ws, "read", json!({"file_path": "f.txt"})).await,
            "     1\tone\n     2\ttwo\n     3\tthree\n     4\tfour\n"
        );
        assert_eq!(
            ok(
                &ws,
                "read",
                json!({"file_path": "f.txt", "view_range": [2, 3]})
            )
            .await,
            "     2\ttwo\n     3\tthree\n"
        );
        assert_eq!(
            ok(
                &ws,
                "read",
                json!({"file_path": "f.txt", "view_range": [3, -1]})
            )
            .await,
            "     3\tthree\n     4\tfour\n"
        );
        assert_eq!(
            ok(
                &ws,
                "read",
                json!({"file_path": "f.txt", "view_range": [4, 100]})
            )
            .await,
            "     4\tfour\n"
        );
        assert!(err(
            &ws,
            "read",
            json!({"file_path": "f.txt", "view_range": [0, 2]})
        )
        .await
        .contains("at least 1"));
        assert!(err(
            &ws,
            "read",
            json!({"file_path": "f.txt", "view_range": [3, 2]})
        )
        .await
        .contains("before start"));
        assert!(err(
            &ws,
            "read",
            json!({"file_path": "f.txt", "view_range": [9, 10]})
        )
        .await
        .contains("4 lines"));
        ws.write_file("empty", b"").await.unwrap();
        assert!(ok(&ws, "read", json!({"file_path": "empty"}))
            .await
            .contains("empty"));
    }

    #[tokio::test]
    async fn read_refuses_binary_missing_and_escapes_and_caps_size() {
        let (_d, ws) = workspace();
        ws.write_file("bin", b"\x7fELF\0\0\x01").await.unwrap();
        ws.write_file("latin1", b"caf\xe9").await.unwrap();
        assert!(err(&ws, "read", json!({"file_path": "bin"}))
            .await
            .contains("binary"));
        assert!(err(&ws, "read", json!({"file_path": "latin1"}))
            .await
            .contains("binary"));
        assert!(err(&ws, "read", json!({"file_path": "missing"}))
            .await
            .contains("missing"));
        assert_eq!(
            err(&ws, "read", json!({"file_path": "/etc/passwd"})).await,
            "path `/etc/passwd` is outside the workspace"
        );
        symlink("/etc/passwd", ws.root().join("pw")).unwrap();
        assert!(err(&ws, "read", json!({"file_path": "pw"}))
            .await
            .contains("outside the workspace"));
        let big: String = (0..40_000)
            .map(|i| format!("line {i} with some padding text\n"))
            .collect();
        ws.write_file("big", big.as_bytes()).await.unwrap();
        let out = ok(&ws, "read", json!({"file_path": "big"})).await;
        assert!(out.len() <= READ_LIMIT + 200);
        assert!(out.contains("capped at 256 KB") && out.contains("40000 lines"));
        let out = ok(
            &ws,
            "read",
            json!({"file_path": "big", "view_range": [39999, -1]}),
        )
        .await;
        assert!(out.contains(" 39999\tline 39998") && out.contains(" 40000\tline 39999"));
    }

    #[tokio::test]
    async fn write_creates_and_overwrites() {
        let (d, ws) = workspace();
        assert!(ok(
            &ws,
            "write",
            json!({"file_path": "a/b/c.txt", "content": "hi"})
        )
        .await
        .contains("2 bytes"));
        assert_eq!(ws.read_file("a/b/c.txt").await.unwrap(), b"hi");
        ok(
            &ws,
            "write",
            json!({"file_path": "a/b/c.txt", "content": ""}),
        )
        .await;
        assert_eq!(ws.read_file("a/b/c.txt").await.unwrap(), b"");
        assert!(
            err(&ws, "write", json!({"file_path": "../x", "content": "x"}))
                .await
                .contains("outside")
        );
        symlink(d.path().join("planted"), ws.root().join("dangling")).unwrap();
        assert!(err(
            &ws,
            "write",
            json!({"file_path": "dangling", "content": "x"})
        )
        .await
        .contains("outside"));
        assert!(!d.path().join("planted").exists());
    }

    #[tokio::test]
    async fn edit_replaces_exactly_once_unless_replace_all() {
        let (_d, ws) = workspace();
        ws.write_file("f", b"alpha beta\nbeta gamma\n")
            .await
            .unwrap();
        let e =
            |old: &str, new: &str| json!({"file_path": "f", "old_string": old, "new_string": new});
        assert!(ok(&ws, "edit", e("alpha", "ALPHA"))
            .await
            .contains("1 occurrence"));
        assert_eq!(
            ws.read_file("f").await.unwrap(),
            b"ALPHA beta\nbeta gamma\n"
        );
        let msg = err(&ws, "edit", e("beta", "B")).await;
        assert!(msg.contains("2 times"), "{msg}");
        assert_eq!(
            ws.read_file("f").await.unwrap(),
            b"ALPHA beta\nbeta gamma\n"
        );
        let msg = err(&ws, "edit", e("delta", "D")).await;
        assert!(
            msg.contains("not found") && msg.contains("0 matches"),
            "{msg}"
        );
        assert!(err(&ws, "edit", e("", "x")).await.contains("empty"));
        assert!(err(&ws, "edit", e("gamma", "gamma"))
            .await
            .contains("identical"));
        let all =
            json!({"file_path": "f", "old_string": "beta", "new_string": "B", "replace_all": true});
        assert!(ok(&ws, "edit", all).await.contains("2 occurrences"));
        assert_eq!(ws.read_file("f").await.unwrap(), b"ALPHA B\nB gamma\n");
        assert!(err(
            &ws,
            "edit",
            json!({"file_path": "nope", "old_string": "a", "new_string": "b"})
        )
        .await
        .contains("nope"));
        assert!(err(
            &ws,
            "edit",
            json!({"file_path": "../f", "old_string": "a", "new_string": "b"})
        )
        .await
        .contains("outside"));
    }

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

    #[test]
    fn glob_syntax() {
        let m = |p: &str, s: &str| Glob::new(p).unwrap().matches(s);
        assert!(m("*", "a.rs") && !m("*", "a/b.rs"));
        assert!(m("**", "a/b/c") && m("**", "a"));
        assert!(m("**/c", "c") && m("**/c", "a/b/c") && !m("**/c", "a/bc"));
        assert!(m("a/**/c", "a/c") && m("a/**/c", "a/x/y/c") && !m("a/**/c", "ab/c"));
        assert!(m("a/**", "a/x/y") && !m("a/**", "b/x"));
        assert!(m("a**", "abc") && !m("a**", "a/b"));
        assert!(m("?.rs", "a.rs") && !m("?.rs", "ab.rs") && !m("a?b", "a/b"));
        assert!(m("[abc].txt", "b.txt") && !m("[abc].txt", "d.txt"));
        assert!(m("[a-c]x", "bx") && !m("[a-c]x", "dx"));
        assert!(m("[!a-c]x", "dx") && m("[^a]x", "bx") && !m("[!a]x", "ax"));
        assert!(m("[]]", "]") && m("[a-]", "-"));
        assert!(m("\\*", "*") && !m("\\*", "a"));
        assert!(m("{src,tests}/**/*.{rs,toml}", "tests/x/Cargo.toml"));
        assert!(m("a{b,c{d,e}}f", "acef") && !m("a{b,c{d,e}}f", "acf"));
        assert!(m("./a.rs", "a.rs"));
        assert!(m("*.rs", ".hidden.rs"));
        assert!(m("*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!m(
            "*a*a*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
        assert!(
            Glob::new("[abc").is_err() && Glob::new("{a,b").is_err() && Glob::new("a\\").is_err()
        );
        assert!(Glob::new("[z-a]").is_err());
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
}

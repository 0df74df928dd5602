//! The built-in toolset `agent_toolset_20260401` (bash, read, write, edit,
//! glob, grep) over any [`Sandbox`]: the dispatch, the result type, the
//! tools' definitions and input parsing. Each tool lives in its own file and
//! reaches files and commands only through the sandbox, so path confinement
//! is the sandbox's; an escape comes back as an error result carrying the
//! [`SandboxError`] message. Bad input (unknown tool, missing field, wrong
//! type, bad pattern) is an error result too, never a panic.

mod bash;
mod files;
mod pattern;
mod search;
#[cfg(test)]
mod test_support;

use std::time::Duration;

use serde_json::{Map, Value};

pub use self::pattern::Glob;
use super::{Sandbox, SandboxError};

/// The tools this module runs.
pub const BUILTIN: [&str; 6] = ["bash", "read", "write", "edit", "glob", "grep"];

/// Largest `read` output.
pub const READ_LIMIT: usize = 256 * 1024;
/// The most of one file `read` and `edit` look at: 16 MB.
pub const FILE_SCAN_LIMIT: usize = 16 * 1024 * 1024;
/// Most `grep` matches reported.
pub const GREP_MAX_MATCHES: usize = 500;
/// Most `glob` paths reported.
pub const GLOB_MAX_PATHS: usize = 1000;

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
/// the six tools, in the order of [`BUILTIN`].
pub fn definitions() -> Vec<Value> {
    vec![
        bash::definition(),
        files::read_definition(),
        files::write_definition(),
        files::edit_definition(),
        search::glob_definition(),
        search::grep_definition(),
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
        "bash" => bash::bash(sandbox, input, deadline).await,
        "read" => files::read(sandbox, input).await,
        "write" => files::write(sandbox, input).await,
        "edit" => files::edit(sandbox, input).await,
        "glob" => search::glob(sandbox, input).await,
        "grep" => search::grep(sandbox, input).await,
        _ => {
            return ToolResult::error(format!(
                "unknown tool `{name}`; the built-in tools are {}",
                BUILTIN.join(", ")
            ))
        }
    };
    result.unwrap_or_else(|e| e)
}

/// A tool's input object.
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_support::{err, workspace};
    use super::*;

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
}

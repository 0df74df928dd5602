//! The file tools `read`, `write` and `edit`: text in and out of the
//! sandbox's files. They must not touch the file system themselves; paths
//! are the sandbox's to confine.

use serde_json::{json, Value};

use super::{
    optional_bool, required_str, type_error, Input, ToolResult, FILE_SCAN_LIMIT, READ_LIMIT,
};
use crate::sandbox::Sandbox;

pub(super) fn read_definition() -> Value {
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
    })
}

pub(super) fn write_definition() -> Value {
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
    })
}

pub(super) fn edit_definition() -> Value {
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
    })
}

/// The first [`FILE_SCAN_LIMIT`] bytes of a file as text, and whether the
/// file goes on; an error result for binary files.
async fn read_text(sandbox: &dyn Sandbox, path: &str) -> Result<(String, bool), ToolResult> {
    let mut bytes = sandbox.read_file(path, FILE_SCAN_LIMIT + 1).await?;
    if bytes.contains(&0) {
        return Err(ToolResult::error(format!("`{path}` is a binary file")));
    }
    let more = bytes.len() > FILE_SCAN_LIMIT;
    if more {
        // Whole lines only, unless the first line alone passes the limit.
        bytes.truncate(FILE_SCAN_LIMIT);
        if let Some(end) = bytes.iter().rposition(|b| *b == b'\n') {
            bytes.truncate(end + 1);
        } else if let Err(e) = std::str::from_utf8(&bytes) {
            if e.error_len().is_none() {
                bytes.truncate(e.valid_up_to());
            }
        }
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ToolResult::error(format!("`{path}` is a binary file (not UTF-8 text)")))?;
    Ok((text, more))
}

/// `view_range` as given: `[start, end]`, unchecked.
fn view_range(input: &Input) -> Result<Option<(i64, i64)>, ToolResult> {
    let expected = || type_error("view_range", "an array of two integers [start, end]");
    match input.get("view_range") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => match items
            .iter()
            .map(Value::as_i64)
            .collect::<Option<Vec<_>>>()
            .as_deref()
        {
            Some(&[start, end]) => Ok(Some((start, end))),
            _ => Err(expected()),
        },
        Some(_) => Err(expected()),
    }
}

/// The first and last line (1-based, inclusive) to show of a file of
/// `total` lines.
fn line_span(
    range: Option<(i64, i64)>,
    total: usize,
    path: &str,
) -> Result<(usize, usize), ToolResult> {
    let Some((start, end)) = range else {
        return Ok((1, total));
    };
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
    Ok((start, end))
}

pub(super) async fn read(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let path = required_str(input, "file_path")?;
    let range = view_range(input)?;
    let (text, more) = read_text(sandbox, path).await?;
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    let (first, last) = line_span(range, total, path).map_err(|e| {
        if more {
            ToolResult::error(format!(
                "`{path}` is larger than {} MB and only its first {total} lines can be read; \
                 use bash (e.g. `sed -n`) for lines past them",
                FILE_SCAN_LIMIT >> 20
            ))
        } else {
            e
        }
    })?;
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
                "[... output capped at 256 KB after line {}; `{path}` has {}{total} lines, use view_range to read more ...]\n",
                number - 1,
                if more { "more than " } else { "" }
            ));
            break;
        }
        out.push_str(&entry);
    }
    Ok(ToolResult::ok(out))
}

pub(super) async fn write(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
    let path = required_str(input, "file_path")?;
    let content = required_str(input, "content")?;
    sandbox.write_file(path, content.as_bytes()).await?;
    Ok(ToolResult::ok(format!(
        "Wrote {} bytes to `{path}`.",
        content.len()
    )))
}

pub(super) async fn edit(sandbox: &dyn Sandbox, input: &Input) -> Result<ToolResult, ToolResult> {
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
    let (text, more) = read_text(sandbox, path).await?;
    if more {
        return Err(ToolResult::error(format!(
            "`{path}` is larger than {} MB; edit it with bash (e.g. `sed -i`)",
            FILE_SCAN_LIMIT >> 20
        )));
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use serde_json::json;

    use super::super::test_support::{err, ok, workspace};
    use super::*;

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
        assert_eq!(ws.read_file("a/b/c.txt", usize::MAX).await.unwrap(), b"hi");
        ok(
            &ws,
            "write",
            json!({"file_path": "a/b/c.txt", "content": ""}),
        )
        .await;
        assert_eq!(ws.read_file("a/b/c.txt", usize::MAX).await.unwrap(), b"");
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
            ws.read_file("f", usize::MAX).await.unwrap(),
            b"ALPHA beta\nbeta gamma\n"
        );
        let msg = err(&ws, "edit", e("beta", "B")).await;
        assert!(msg.contains("2 times"), "{msg}");
        assert_eq!(
            ws.read_file("f", usize::MAX).await.unwrap(),
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
        assert_eq!(
            ws.read_file("f", usize::MAX).await.unwrap(),
            b"ALPHA B\nB gamma\n"
        );
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
}

//! Transcripts for people: terminal text, Markdown and a self-contained HTML page.
//!
//! The events quote models, tools and servers: every format escapes their
//! control characters (the text one is printed to terminals, and the others
//! may be), while the transcript itself keeps the bytes as received.

use std::fmt::Write;

use serde_json::Value;

use super::transcript::Transcript;
use crate::runtime::event;
use crate::terminal::escape_controls;

/// One line per conversational event; statuses and spans are summarised.
enum Item {
    User(String),
    Agent(String),
    ToolUse {
        name: String,
        input: String,
        id: String,
    },
    ToolResult {
        id: String,
        text: String,
        is_error: bool,
    },
    Note(String),
}

fn items(t: &Transcript) -> Vec<Item> {
    let mut out = Vec::new();
    for e in &t.events {
        let kind = event::kind(e);
        match kind {
            "user.message" => out.push(Item::User(event::text(e))),
            "agent.message" => out.push(Item::Agent(event::text(e))),
            "agent.tool_use" | "agent.custom_tool_use" | "agent.mcp_tool_use" => {
                out.push(Item::ToolUse {
                    name: e
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    input: e.get("input").map(|v| v.to_string()).unwrap_or_default(),
                    id: event::id(e).to_string(),
                })
            }
            "agent.tool_result" | "agent.mcp_tool_result" => out.push(Item::ToolResult {
                id: e
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                text: event::text(e),
                is_error: e.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }),
            "user.custom_tool_result" => out.push(Item::ToolResult {
                id: e
                    .get("custom_tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                text: event::text(e),
                is_error: e.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            }),
            "user.tool_confirmation" => out.push(Item::Note(format!(
                "confirmation for {}: {}{}",
                e.get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                e.get("result").and_then(Value::as_str).unwrap_or_default(),
                e.get("deny_message")
                    .and_then(Value::as_str)
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ))),
            "user.interrupt" => out.push(Item::Note("interrupted by the user".into())),
            "session.error" => out.push(Item::Note(format!(
                "error: {}",
                e.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            ))),
            "session.status_idle" => out.push(Item::Note(format!(
                "idle ({})",
                event::stop_reason(e).unwrap_or("?")
            ))),
            "session.status_terminated" => out.push(Item::Note("terminated".into())),
            _ => {}
        }
    }
    out
}

fn title(t: &Transcript) -> String {
    match &t.header {
        Some(h) => format!("{} — run {}", h.session, h.run_id),
        None => "transcript".into(),
    }
}

fn verdict(t: &Transcript) -> String {
    match &t.footer {
        Some(f) if f.passed => format!(
            "passed · {} events · {} ms · {} in / {} out tokens",
            f.events, f.duration_ms, f.usage.input_tokens, f.usage.output_tokens
        ),
        Some(f) => format!("FAILED · {} events · {} ms", f.events, f.duration_ms),
        None => "incomplete (no footer)".into(),
    }
}

pub fn text(t: &Transcript) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n{}\n", title(t), verdict(t));
    for item in items(t) {
        match item {
            Item::User(x) => {
                let _ = writeln!(s, "user  › {x}");
            }
            Item::Agent(x) => {
                let _ = writeln!(s, "agent › {x}");
            }
            Item::ToolUse { name, input, .. } => {
                let _ = writeln!(s, "  tool {name} {input}");
            }
            Item::ToolResult { text, is_error, .. } => {
                let mark = if is_error { "error" } else { "→" };
                let first: String = text.lines().take(6).collect::<Vec<_>>().join("\n        ");
                let _ = writeln!(s, "    {mark} {first}");
            }
            Item::Note(n) => {
                let _ = writeln!(s, "  · {n}");
            }
        }
    }
    append_results(&mut s, t, false);
    escape_controls(&s).into_owned()
}

fn append_results(s: &mut String, t: &Transcript, markdown: bool) {
    let Some(f) = &t.footer else { return };
    let _ = writeln!(
        s,
        "{}",
        if markdown {
            "\n## Expectations\n"
        } else {
            "\nexpectations:"
        }
    );
    for step in &f.steps {
        for e in &step.expectations {
            let mark = if e.passed { "✓" } else { "✗" };
            let msg = if e.passed {
                String::new()
            } else {
                format!(": {}", e.message)
            };
            let _ = writeln!(
                s,
                "{}{mark} step {}: {}{msg}",
                if markdown { "- " } else { "  " },
                step.index + 1,
                e.expectation
            );
        }
        if let Some(err) = &step.error {
            let _ = writeln!(
                s,
                "{}✗ step {}: {err}",
                if markdown { "- " } else { "  " },
                step.index + 1
            );
        }
    }
}

pub fn markdown(t: &Transcript) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n\n{}\n", title(t), verdict(t));
    for item in items(t) {
        match item {
            Item::User(x) => {
                let _ = writeln!(s, "**User:** {x}\n");
            }
            Item::Agent(x) => {
                let _ = writeln!(s, "**Agent:** {x}\n");
            }
            Item::ToolUse { name, input, .. } => {
                let _ = writeln!(s, "<details><summary>tool <code>{name}</code></summary>\n\n```json\n{input}\n```\n</details>\n");
            }
            Item::ToolResult { text, is_error, .. } => {
                let label = if is_error { "error" } else { "result" };
                let _ = writeln!(
                    s,
                    "<details><summary>{label}</summary>\n\n```\n{text}\n```\n</details>\n"
                );
            }
            Item::Note(n) => {
                let _ = writeln!(s, "_{n}_\n");
            }
        }
    }
    append_results(&mut s, t, true);
    escape_controls(&s).into_owned()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn html(t: &Transcript) -> String {
    let mut body = String::new();
    for item in items(t) {
        match item {
            Item::User(x) => {
                let _ = writeln!(
                    body,
                    r#"<div class="msg user"><b>User</b><p>{}</p></div>"#,
                    html_escape(&x)
                );
            }
            Item::Agent(x) => {
                let _ = writeln!(
                    body,
                    r#"<div class="msg agent"><b>Agent</b><p>{}</p></div>"#,
                    html_escape(&x)
                );
            }
            Item::ToolUse { name, input, id } => {
                let _ = writeln!(
                    body,
                    r#"<details class="tool" id="{}"><summary>tool <code>{}</code></summary><pre>{}</pre></details>"#,
                    html_escape(&id),
                    html_escape(&name),
                    html_escape(&input)
                );
            }
            Item::ToolResult { id, text, is_error } => {
                let class = if is_error { "tool error" } else { "tool" };
                let _ = writeln!(
                    body,
                    r#"<details class="{class}"><summary>{} for {}</summary><pre>{}</pre></details>"#,
                    if is_error { "error" } else { "result" },
                    html_escape(&id),
                    html_escape(&text)
                );
            }
            Item::Note(n) => {
                let _ = writeln!(body, r#"<div class="note">{}</div>"#, html_escape(&n));
            }
        }
    }
    let mut results = String::new();
    append_results(&mut results, t, false);
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:860px;margin:2rem auto;padding:0 1rem;color:#222}}
.msg{{border-radius:8px;padding:.6rem .9rem;margin:.6rem 0}}
.user{{background:#eef4ff}} .agent{{background:#f4f4f4}}
.msg p{{margin:.3rem 0 0;white-space:pre-wrap}}
details.tool{{margin:.3rem 0 .3rem 1.5rem;font-size:.9rem}} details.error summary{{color:#b00}}
pre{{background:#fafafa;border:1px solid #ddd;padding:.5rem;overflow:auto;white-space:pre-wrap}}
.note{{color:#777;font-size:.85rem;margin:.2rem 0 .2rem 1.5rem}}
</style></head><body>
<h1>{title}</h1><p>{verdict}</p>
{body}
<h2>Expectations</h2><pre>{results}</pre>
</body></html>
"#,
        title = html_escape(&title(t)),
        verdict = html_escape(&verdict(t)),
        results = html_escape(results.trim()),
    );
    escape_controls(&page).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{html, markdown, text};
    use crate::runner::transcript::{Footer, Transcript};

    const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\u{9b}";

    fn hostile() -> Transcript {
        let block = json!([{ "type": "text", "text": HOSTILE }]);
        Transcript {
            header: None,
            events: vec![
                json!({ "type": "user.message", "content": block }),
                json!({ "type": "agent.message", "content": block }),
                json!({ "type": "agent.tool_use", "id": "t1", "name": HOSTILE, "input": { "c": HOSTILE } }),
                json!({ "type": "agent.tool_result", "tool_use_id": "t1", "content": block }),
                json!({ "type": "session.error", "error": { "message": HOSTILE } }),
            ],
            footer: Some(Footer::default()),
        }
    }

    #[test]
    fn every_format_escapes_control_characters() {
        let t = hostile();
        for (format, out) in [
            ("text", text(&t)),
            ("markdown", markdown(&t)),
            ("html", html(&t)),
        ] {
            let hidden: Vec<char> = out
                .chars()
                .filter(|c| c.is_control() && !matches!(c, '\n' | '\t'))
                .collect();
            assert!(hidden.is_empty(), "{format}: {hidden:?} in\n{out}");
            assert!(
                out.contains("\\u001b]0;pwned\\u0007\\u001b[2J"),
                "{format}: {out}"
            );
        }
        // The transcript itself is untouched.
        assert_eq!(t.events[1]["content"][0]["text"], HOSTILE);
    }
}

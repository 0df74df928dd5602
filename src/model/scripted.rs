//! The deterministic model for offline CI: answers from a list of turns, or
//! from the model turns of a recorded transcript.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{Model, ModelError, ModelRequest, ModelResponse, Usage};

/// One model response: an optional text block, then one `tool_use` block per entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptTurn {
    /// Text the model says.
    pub text: Option<String>,
    /// Tools the model calls, in order.
    #[serde(default)]
    pub tool_use: Vec<ScriptToolUse>,
    /// Defaults to `tool_use` when the turn calls tools, else `end_turn`.
    pub stop_reason: Option<String>,
}

/// One tool call in a [`ScriptTurn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptToolUse {
    /// The tool's name.
    pub name: String,
    /// The tool's input.
    #[serde(default)]
    pub input: Map<String, Value>,
}

impl ScriptTurn {
    /// `stop_reason`, or its default.
    pub fn effective_stop_reason(&self) -> &str {
        match &self.stop_reason {
            Some(reason) => reason,
            None if self.tool_use.is_empty() => "end_turn",
            None => "tool_use",
        }
    }
}

#[derive(Debug, Default)]
struct Cursor {
    /// Index of the next turn.
    next_turn: usize,
    /// Tool-use ids handed out so far.
    tool_ids: u64,
}

/// Answers each call with the next [`ScriptTurn`].
#[derive(Debug)]
pub struct ScriptedModel {
    turns: Vec<ScriptTurn>,
    cursor: Mutex<Cursor>,
}

impl ScriptedModel {
    pub fn new(turns: Vec<ScriptTurn>) -> Self {
        ScriptedModel {
            turns,
            cursor: Mutex::new(Cursor::default()),
        }
    }

    /// Rebuilds the model turns of a transcript written by `agentform run`
    /// (JSONL: a header record, `{"kind":"event","event":{…}}` records, a
    /// footer record; bare event lines are accepted too).
    ///
    /// A turn is what one model call produced: the `agent.message`,
    /// `agent.tool_use` and `agent.custom_tool_use` events from a
    /// `span.model_request_start` up to the next one (texts joined with a
    /// blank line). A call whose `span.model_request_end` has `is_error: true`
    /// and produced nothing is left out, as is an unfinished call that
    /// produced nothing.
    pub fn from_transcript(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ModelError::Config(format!("cannot read transcript {}: {e}", path.display()))
        })?;
        let turns = turns_from_transcript(&text)
            .map_err(|e| ModelError::Config(format!("transcript {}: {e}", path.display())))?;
        Ok(Self::new(turns))
    }

    /// All turns, used or not.
    pub fn turns(&self) -> &[ScriptTurn] {
        &self.turns
    }

    /// How many turns are left.
    pub fn remaining(&self) -> usize {
        self.turns.len().saturating_sub(self.lock().next_turn)
    }

    fn lock(&self) -> MutexGuard<'_, Cursor> {
        // The cursor stays consistent even if a holder panicked.
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Model for ScriptedModel {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let mut cursor = self.lock();
        let Some(turn) = self.turns.get(cursor.next_turn) else {
            let n = self.turns.len();
            return Err(ModelError::ScriptExhausted(format!(
                "the script has {n} turn{} and all were used; add turns to the script (model call {} has no answer)",
                if n == 1 { "" } else { "s" },
                n + 1
            )));
        };
        cursor.next_turn += 1;

        let mut content = Vec::new();
        let mut output_chars = 0;
        if let Some(text) = turn.text.as_deref().filter(|t| !t.is_empty()) {
            output_chars += text.chars().count();
            content.push(json!({"type": "text", "text": text}));
        }
        for tool in &turn.tool_use {
            cursor.tool_ids += 1;
            let input = Value::Object(tool.input.clone());
            output_chars += tool.name.chars().count() + input.to_string().chars().count();
            content.push(json!({
                "type": "tool_use",
                "id": format!("toolu_{:04}", cursor.tool_ids),
                "name": tool.name,
                "input": input,
            }));
        }
        drop(cursor);

        let input_chars = Value::Array(request.messages.clone())
            .to_string()
            .chars()
            .count();
        Ok(ModelResponse {
            content,
            stop_reason: turn.effective_stop_reason().to_owned(),
            usage: Usage {
                input_tokens: (input_chars as u64 / 4).max(1),
                output_tokens: (output_chars as u64 / 4).max(1),
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
            },
        })
    }
}

/// A model call being rebuilt.
#[derive(Default)]
struct OpenCall {
    texts: Vec<String>,
    tool_use: Vec<ScriptToolUse>,
    ended: bool,
    failed: bool,
}

impl OpenCall {
    fn into_turn(self) -> Option<ScriptTurn> {
        let produced = !self.texts.is_empty() || !self.tool_use.is_empty();
        if !produced && (self.failed || !self.ended) {
            return None;
        }
        Some(ScriptTurn {
            text: (!self.texts.is_empty()).then(|| self.texts.join("\n\n")),
            tool_use: self.tool_use,
            stop_reason: None,
        })
    }
}

/// The turns of a transcript's text; errors name the line.
fn turns_from_transcript(text: &str) -> Result<Vec<ScriptTurn>, String> {
    let mut turns = Vec::new();
    let mut open: Option<OpenCall> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record: Value =
            serde_json::from_str(line).map_err(|e| format!("line {number}: invalid JSON: {e}"))?;
        let Some(event) = event_of(&record).map_err(|e| format!("line {number}: {e}"))? else {
            continue;
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "span.model_request_start" => {
                if let Some(call) = open.replace(OpenCall::default()) {
                    turns.extend(call.into_turn());
                }
            }
            "span.model_request_end" => {
                if let Some(call) = open.as_mut() {
                    call.ended = true;
                    call.failed = event.get("is_error").and_then(Value::as_bool) == Some(true);
                }
            }
            "agent.message" => {
                if let Some(call) = open.as_mut() {
                    let text = message_text(event.get("content"));
                    if !text.is_empty() {
                        call.texts.push(text);
                    }
                }
            }
            "agent.tool_use" | "agent.custom_tool_use" => {
                if let Some(call) = open.as_mut() {
                    let name = event
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("line {number}: {kind} event without a name"))?;
                    let input = match event.get("input") {
                        None | Some(Value::Null) => Map::new(),
                        Some(Value::Object(map)) => map.clone(),
                        Some(_) => {
                            return Err(format!(
                                "line {number}: {kind} event whose input is not an object"
                            ))
                        }
                    };
                    call.tool_use.push(ScriptToolUse {
                        name: name.to_owned(),
                        input,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(call) = open {
        turns.extend(call.into_turn());
    }
    Ok(turns)
}

/// The event a transcript line carries, `None` for header, footer and
/// unknown records.
fn event_of(record: &Value) -> Result<Option<&Value>, String> {
    if !record.is_object() {
        return Err("expected a JSON object".into());
    }
    match record.get("kind") {
        Some(Value::String(kind)) if kind == "event" => match record.get("event") {
            Some(event @ Value::Object(_)) => Ok(Some(event)),
            _ => Err("an event record without an `event` object".into()),
        },
        Some(Value::String(_)) => Ok(None),
        Some(_) => Err("`kind` is not a string".into()),
        None if record.get("type").is_some_and(Value::is_string) => Ok(Some(record)),
        None => Err("neither a transcript record (`kind`) nor an event (`type`)".into()),
    }
}

/// Text of an `agent.message`'s content blocks (or a bare string), joined
/// without separators.
fn message_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn turn(text: Option<&str>, tools: &[(&str, Value)]) -> ScriptTurn {
        ScriptTurn {
            text: text.map(str::to_owned),
            tool_use: tools
                .iter()
                .map(|(name, input)| ScriptToolUse {
                    name: (*name).to_owned(),
                    input: input.as_object().unwrap().clone(),
                })
                .collect(),
            stop_reason: None,
        }
    }

    fn request(text: &str) -> ModelRequest {
        ModelRequest {
            model: "claude-sonnet-4-6".into(),
            system: None,
            messages: vec![json!({"role": "user", "content": [{"type": "text", "text": text}]})],
            tools: Vec::new(),
            max_tokens: 1024,
        }
    }

    #[tokio::test]
    async fn answers_turns_in_order_with_counted_tool_ids() {
        let model = ScriptedModel::new(vec![
            turn(
                Some("Looking."),
                &[
                    ("bash", json!({"command": "ls"})),
                    ("read", json!({"path": "a"})),
                ],
            ),
            turn(None, &[("bash", json!({}))]),
            turn(Some("Done."), &[]),
        ]);
        assert_eq!(model.remaining(), 3);

        let first = model.complete(&request("go")).await.unwrap();
        assert_eq!(
            first.content,
            vec![
                json!({"type": "text", "text": "Looking."}),
                json!({"type": "tool_use", "id": "toolu_0001", "name": "bash", "input": {"command": "ls"}}),
                json!({"type": "tool_use", "id": "toolu_0002", "name": "read", "input": {"path": "a"}}),
            ]
        );
        assert_eq!(first.stop_reason, "tool_use");

        let second = model.complete(&request("go")).await.unwrap();
        assert_eq!(
            second.content,
            vec![json!({"type": "tool_use", "id": "toolu_0003", "name": "bash", "input": {}})]
        );

        let third = model.complete(&request("go")).await.unwrap();
        assert_eq!(
            third.content,
            vec![json!({"type": "text", "text": "Done."})]
        );
        assert_eq!(third.stop_reason, "end_turn");
        assert_eq!(model.remaining(), 0);

        // A fresh model hands out the same ids.
        let again = ScriptedModel::new(model.turns().to_vec());
        assert_eq!(again.complete(&request("go")).await.unwrap(), first);
    }

    #[tokio::test]
    async fn explicit_stop_reason_and_deterministic_usage() {
        let model = ScriptedModel::new(vec![
            ScriptTurn {
                stop_reason: Some("max_tokens".into()),
                ..turn(Some("abcdefgh"), &[])
            },
            turn(None, &[]),
        ]);
        let req = request("x".repeat(400).as_str());
        let response = model.complete(&req).await.unwrap();
        assert_eq!(response.stop_reason, "max_tokens");
        let chars = serde_json::to_string(&req.messages)
            .unwrap()
            .chars()
            .count() as u64;
        assert_eq!(response.usage.input_tokens, chars / 4);
        assert_eq!(response.usage.output_tokens, 2);

        let empty = model.complete(&request("")).await.unwrap();
        assert!(empty.content.is_empty());
        assert_eq!(empty.stop_reason, "end_turn");
        assert_eq!(empty.usage.output_tokens, 1);
    }

    #[tokio::test]
    async fn exhaustion_is_an_error() {
        let model = ScriptedModel::new(vec![turn(Some("only"), &[])]);
        model.complete(&request("a")).await.unwrap();
        let error = model.complete(&request("b")).await.unwrap_err();
        assert_eq!(
            error,
            ModelError::ScriptExhausted(
                "the script has 1 turn and all were used; add turns to the script (model call 2 has no answer)"
                    .into()
            )
        );
        let error = ScriptedModel::new(Vec::new())
            .complete(&request("a"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ModelError::ScriptExhausted(m) if m.starts_with("the script has 0 turns"))
        );
    }

    #[test]
    fn script_turns_deserialize_strictly() {
        let turn: ScriptTurn = serde_json::from_value(
            json!({"text": "hi", "tool_use": [{"name": "bash", "input": {"command": "ls"}}]}),
        )
        .unwrap();
        assert_eq!(turn.tool_use[0].name, "bash");
        let bare: ScriptTurn = serde_json::from_value(json!({})).unwrap();
        assert_eq!(bare, turn_with_nothing());
        assert!(serde_json::from_value::<ScriptTurn>(json!({"txt": "hi"})).is_err());
        assert!(serde_json::from_value::<ScriptToolUse>(json!({"name": "a", "id": "x"})).is_err());
        let schema = schemars::schema_for!(ScriptTurn);
        assert!(schema.as_value().to_string().contains("tool_use"));
    }

    fn turn_with_nothing() -> ScriptTurn {
        ScriptTurn {
            text: None,
            tool_use: Vec::new(),
            stop_reason: None,
        }
    }

    /// The agent events a model response turns into (ids aside).
    fn agent_events(response: &ModelResponse) -> Vec<Value> {
        response
            .content
            .iter()
            .map(|block| match block["type"].as_str().unwrap() {
                "text" => json!({"type": "agent.message", "content": [{"type": "text", "text": block["text"]}]}),
                _ => json!({"type": "agent.tool_use", "name": block["name"], "input": block["input"]}),
            })
            .collect()
    }

    /// Runs `model` for `calls` calls and records a transcript the way the
    /// runtime does; returns the agent events produced, in order.
    async fn record(model: &ScriptedModel, calls: usize, path: &Path) -> Vec<Value> {
        let mut lines = vec![json!({"kind": "header", "version": 1, "session_id": "sesn_1"})];
        let mut wrap = |event: Value| lines.push(json!({"kind": "event", "event": event}));
        let mut produced = Vec::new();
        wrap(json!({"type": "user.message", "content": [{"type": "text", "text": "go"}]}));
        for n in 0..calls {
            wrap(json!({"type": "span.model_request_start", "id": format!("sevt_s{n}")}));
            let response = model.complete(&request("go")).await.unwrap();
            for (i, event) in agent_events(&response).into_iter().enumerate() {
                let mut event = event;
                event["id"] = json!(format!("sevt_{n}_{i}"));
                produced.push(event.clone());
                wrap(event);
            }
            wrap(json!({
                "type": "span.model_request_end",
                "model_usage": {
                    "input_tokens": response.usage.input_tokens,
                    "output_tokens": response.usage.output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0
                }
            }));
            if response.stop_reason == "tool_use" {
                wrap(json!({"type": "agent.tool_result", "tool_use_id": "x", "content": []}));
            }
        }
        wrap(json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}}));
        lines.push(json!({"kind": "footer", "events": 42}));
        let mut file = std::fs::File::create(path).unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        produced
    }

    fn strip_ids(events: &[Value]) -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("id");
                e
            })
            .collect()
    }

    #[tokio::test]
    async fn transcript_round_trip_replays_the_same_agent_events() {
        let dir = tempfile::tempdir().unwrap();
        let turns = vec![
            turn(
                Some("I'll look around."),
                &[("bash", json!({"command": "ls -la"}))],
            ),
            turn(
                None,
                &[
                    ("read", json!({"path": "/tmp/a"})),
                    ("write", json!({"path": "b", "content": "x"})),
                ],
            ),
            turn(Some("All done."), &[]),
        ];
        let original = ScriptedModel::new(turns.clone());
        let first = dir.path().join("first.jsonl");
        let recorded = record(&original, 3, &first).await;

        let replay = ScriptedModel::from_transcript(&first).unwrap();
        assert_eq!(replay.turns(), turns.as_slice());

        let second = dir.path().join("second.jsonl");
        let replayed = record(&replay, 3, &second).await;
        assert_eq!(strip_ids(&replayed), strip_ids(&recorded));
        assert!(replay.complete(&request("more")).await.is_err());
    }

    #[test]
    fn transcript_grouping_details() {
        let text = [
            r#"{"kind":"header","version":1}"#,
            r#"{"type":"agent.message","content":[{"type":"text","text":"before any call: ignored"}]}"#,
            "",
            r#"{"type":"span.model_request_start"}"#,
            r#"{"type":"agent.thinking"}"#,
            r#"{"type":"agent.message","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
            r#"{"type":"agent.message","content":[{"type":"text","text":"c"}]}"#,
            r#"{"type":"agent.custom_tool_use","id":"sevt_9","name":"lookup","input":{"q":1}}"#,
            r#"{"type":"span.model_request_end","model_usage":{"input_tokens":1}}"#,
            r#"{"kind":"event","event":{"type":"user.custom_tool_result","custom_tool_use_id":"sevt_9"}}"#,
            r#"{"kind":"event","event":{"type":"span.model_request_start"}}"#,
            r#"{"kind":"event","event":{"type":"span.model_request_end","is_error":true}}"#,
            r#"{"kind":"event","event":{"type":"span.model_request_start"}}"#,
            r#"{"kind":"event","event":{"type":"span.model_request_end"}}"#,
            r#"{"kind":"event","event":{"type":"span.model_request_start"}}"#,
            r#"{"kind":"event","event":{"type":"agent.tool_use","name":"bash"}}"#,
            r#"{"kind":"footer"}"#,
        ]
        .join("\n");
        let turns = turns_from_transcript(&text).unwrap();
        assert_eq!(
            turns,
            vec![
                ScriptTurn {
                    text: Some("ab\n\nc".into()),
                    tool_use: vec![ScriptToolUse {
                        name: "lookup".into(),
                        input: json!({"q": 1}).as_object().unwrap().clone(),
                    }],
                    stop_reason: None,
                },
                turn_with_nothing(),
                turn(None, &[("bash", json!({}))]),
            ]
        );
    }

    #[test]
    fn transcript_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"kind\":\"header\"}\n{not json}\n").unwrap();
        let error = ScriptedModel::from_transcript(&path).unwrap_err();
        let ModelError::Config(message) = error else {
            panic!("expected a Config error");
        };
        assert!(
            message.starts_with(&format!(
                "transcript {}: line 2: invalid JSON",
                path.display()
            )),
            "{message}"
        );

        std::fs::write(&path, "{\"kind\":\"event\"}\n").unwrap();
        let error = ScriptedModel::from_transcript(&path).unwrap_err();
        assert!(
            matches!(&error, ModelError::Config(m) if m.contains("line 1: ")),
            "{error:?}"
        );

        std::fs::write(&path, "[1]\n").unwrap();
        assert!(ScriptedModel::from_transcript(&path).is_err());

        let missing = dir.path().join("missing.jsonl");
        let error = ScriptedModel::from_transcript(&missing).unwrap_err();
        assert!(
            matches!(&error, ModelError::Config(m) if m.starts_with(&format!("cannot read transcript {}", missing.display()))),
            "{error:?}"
        );
    }
}

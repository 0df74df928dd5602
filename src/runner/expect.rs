//! Checking a step's result against its expectations.

use serde_json::Value;

use super::transcript::{ExpectationResult, StepResult};
use crate::manifest::spec::Expectation;

pub fn describe(e: &Expectation) -> String {
    match e {
        Expectation::Contains(s) => format!("contains {s:?}"),
        Expectation::NotContains(s) => format!("not_contains {s:?}"),
        Expectation::Regex(r) => format!("regex {r:?}"),
        Expectation::Equals(s) => format!("equals {s:?}"),
        Expectation::Json { path, equals } => format!("json {path} equals {equals}"),
        Expectation::ToolUsed(t) => format!("tool_used {t}"),
        Expectation::ToolNotUsed(t) => format!("tool_not_used {t}"),
        Expectation::Turns { min, max } => match (min, max) {
            (Some(a), Some(b)) => format!("turns {a}..={b}"),
            (Some(a), None) => format!("turns >= {a}"),
            (None, Some(b)) => format!("turns <= {b}"),
            (None, None) => "turns".into(),
        },
        Expectation::StopReason(s) => format!("stop_reason {s}"),
        Expectation::MaxLatencyMs(ms) => format!("max_latency_ms {ms}"),
    }
}

pub fn check(e: &Expectation, step: &StepResult) -> ExpectationResult {
    let reply = step.reply.as_str();
    let (passed, message) = match e {
        Expectation::Contains(s) => (
            reply.contains(s.as_str()),
            format!("the reply does not contain {s:?}"),
        ),
        Expectation::NotContains(s) => (
            !reply.contains(s.as_str()),
            format!("the reply contains {s:?}"),
        ),
        Expectation::Regex(r) => match regex::Regex::new(r) {
            Ok(re) => (
                re.is_match(reply),
                format!("the reply does not match /{r}/"),
            ),
            Err(err) => (false, format!("invalid regex: {err}")),
        },
        Expectation::Equals(s) => (
            reply.trim() == s.trim(),
            format!("the reply is {:?}", shorten(reply)),
        ),
        Expectation::Json { path, equals } => match serde_json::from_str::<Value>(reply.trim()) {
            Ok(v) => match lookup(&v, path) {
                Some(found) => (
                    found == equals,
                    format!("`{path}` is {found}, not {equals}"),
                ),
                None => (false, format!("the reply has no `{path}`")),
            },
            Err(_) => (false, "the reply is not JSON".into()),
        },
        Expectation::ToolUsed(t) => (
            step.tools_used.iter().any(|u| u == t),
            format!("`{t}` was not used (used: {})", list(&step.tools_used)),
        ),
        Expectation::ToolNotUsed(t) => (
            !step.tools_used.iter().any(|u| u == t),
            format!("`{t}` was used"),
        ),
        Expectation::Turns { min, max } => {
            let ok = min.is_none_or(|m| step.turns >= m) && max.is_none_or(|m| step.turns <= m);
            (ok, format!("{} model turns", step.turns))
        }
        Expectation::StopReason(s) => {
            let got = step.stop_reason.as_deref().unwrap_or("none");
            (got == s, format!("stopped with `{got}`"))
        }
        Expectation::MaxLatencyMs(ms) => (
            step.latency_ms <= *ms,
            format!("took {} ms", step.latency_ms),
        ),
    };
    ExpectationResult {
        expectation: describe(e),
        passed,
        message: if passed { String::new() } else { message },
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn shorten(s: &str) -> String {
    let cut: String = s.chars().take(200).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// `a.b.0.c` into objects and arrays; a leading `$.` is allowed.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .strip_prefix("$.")
        .or_else(|| path.strip_prefix('$'))
        .unwrap_or(path);
    let mut cur = v;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(reply: &str) -> StepResult {
        StepResult {
            reply: reply.into(),
            turns: 2,
            tools_used: vec!["bash".into()],
            stop_reason: Some("end_turn".into()),
            latency_ms: 40,
            ..Default::default()
        }
    }

    #[test]
    fn each_kind_passes_and_fails() {
        let s = step(r#"{"total": 42, "items": [{"name": "a"}]}"#);
        assert!(check(&Expectation::Contains("total".into()), &s).passed);
        assert!(!check(&Expectation::NotContains("total".into()), &s).passed);
        assert!(check(&Expectation::Regex(r"\d+".into()), &s).passed);
        assert!(
            check(
                &Expectation::Json {
                    path: "items.0.name".into(),
                    equals: json!("a")
                },
                &s
            )
            .passed
        );
        assert!(
            !check(
                &Expectation::Json {
                    path: "total".into(),
                    equals: json!(41)
                },
                &s
            )
            .passed
        );
        assert!(check(&Expectation::ToolUsed("bash".into()), &s).passed);
        assert!(!check(&Expectation::ToolNotUsed("bash".into()), &s).passed);
        assert!(
            check(
                &Expectation::Turns {
                    min: Some(1),
                    max: Some(2)
                },
                &s
            )
            .passed
        );
        assert!(
            !check(
                &Expectation::Turns {
                    min: Some(3),
                    max: None
                },
                &s
            )
            .passed
        );
        assert!(check(&Expectation::StopReason("end_turn".into()), &s).passed);
        assert!(!check(&Expectation::MaxLatencyMs(10), &s).passed);
        assert!(!check(&Expectation::Equals("x".into()), &s).passed);
    }
}

//! E2B templates, as the official SDK (`e2b` 2.63.0,
//! `e2b/api/client/api/templates/`) builds them: `POST /v3/templates
//! {name}` names one (`{templateID, buildID}`), `POST
//! /v2/templates/{templateID}/builds/{buildID}` starts its build from a
//! base template with `RUN` steps, `GET
//! /templates/{templateID}/builds/{buildID}/status` is polled until
//! `ready` or `error` (its logs read from an offset), `DELETE
//! /templates/{templateID}` removes it. What a template holds is the
//! caller's (`images.rs`).

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::api::E2bApi;
use super::error::{E2bError, E2bErrorKind};

/// How much of a failed build's log its error keeps (the end).
const LOG_TAIL: usize = 2000;
/// First and longest wait between two polls of a build.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

/// `TemplateBuildRequestV3`.
#[derive(Serialize)]
struct NewTemplate<'a> {
    name: &'a str,
}

/// `TemplateRequestResponseV3` (the fields used).
#[derive(Deserialize)]
struct Requested {
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(rename = "buildID")]
    build_id: String,
}

/// `TemplateBuildStartV2`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildStart<'a> {
    from_template: &'a str,
    steps: Vec<Step>,
}

/// `TemplateStep`: `RUN` takes the command and the user to run it as.
#[derive(Serialize)]
struct Step {
    #[serde(rename = "type")]
    kind: &'static str,
    args: Vec<String>,
}

/// `TemplateBuildInfo` (the fields used).
#[derive(Deserialize)]
struct BuildInfo {
    status: String,
    #[serde(default)]
    logs: Vec<String>,
    #[serde(default)]
    reason: Option<Reason>,
}

/// `BuildStatusReason`.
#[derive(Deserialize)]
struct Reason {
    message: String,
}

/// The end of `text`, at most [`LOG_TAIL`] bytes, cut at a character.
fn tail(text: &str) -> &str {
    let text = text.trim_end();
    let mut cut = text.len().saturating_sub(LOG_TAIL);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}

impl E2bApi {
    /// Builds the template `name` from `from` with one `RUN` of `command`
    /// as `user`, waiting at most `deadline`: its id once it is ready. A
    /// failed build is deleted and its error ends with the build's log.
    pub async fn build_template(
        &self,
        name: &str,
        from: &str,
        command: &str,
        user: &str,
        deadline: Duration,
    ) -> Result<String, E2bError> {
        let label = "POST /v3/templates".to_owned();
        let mut call = self.call(
            Method::POST,
            self.url(&["v3", "templates"], &[]),
            label.clone(),
        );
        call.idempotent = false;
        call.body = Some((
            "application/json",
            self.json(&label, &NewTemplate { name })?,
        ));
        let requested: Requested = self.parse(&label, &call.whole().await?)?;
        let (template, build) = (requested.template_id, requested.build_id);
        let result = self
            .run_build(&template, &build, from, command, user, deadline)
            .await;
        if result.is_err() {
            if let Err(e) = self.delete_template(&template).await {
                tracing::warn!(template = %template, "cannot delete a failed E2B template: {e}");
            }
        }
        result.map(|()| template)
    }

    async fn run_build(
        &self,
        template: &str,
        build: &str,
        from: &str,
        command: &str,
        user: &str,
        deadline: Duration,
    ) -> Result<(), E2bError> {
        let label = format!("POST /v2/templates/{template}/builds/{build}");
        let url = self.url(&["v2", "templates", template, "builds", build], &[]);
        let mut call = self.call(Method::POST, url, label.clone());
        call.idempotent = false;
        let start = BuildStart {
            from_template: from,
            steps: vec![Step {
                kind: "RUN",
                args: vec![command.to_owned(), user.to_owned()],
            }],
        };
        call.body = Some(("application/json", self.json(&label, &start)?));
        call.whole().await?;

        let label = format!("GET /templates/{template}/builds/{build}/status");
        let ends = tokio::time::Instant::now() + deadline;
        let mut wait = POLL_FIRST;
        let mut log = String::new();
        loop {
            let offset = log.lines().count().to_string();
            let url = self.url(
                &["templates", template, "builds", build, "status"],
                &[("logsOffset", offset.as_str())],
            );
            let answer = self.call(Method::GET, url, label.clone()).whole().await?;
            let info: BuildInfo = self.parse(&label, &answer)?;
            for line in info.logs {
                log.push_str(line.trim_end_matches('\n'));
                log.push('\n');
            }
            match info.status.as_str() {
                "ready" => return Ok(()),
                "error" => {
                    let why = info.reason.map(|r| r.message).unwrap_or_default();
                    return Err(E2bError::new(
                        E2bErrorKind::Rejected,
                        self.redactor.text(format!(
                            "the E2B template build failed{}{why}\n{}",
                            if why.is_empty() { "" } else { ": " },
                            tail(&log)
                        )),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() + wait > ends {
                return Err(E2bError::new(
                    E2bErrorKind::Server,
                    format!(
                        "the E2B template build did not finish in {deadline:?}\n{}",
                        tail(&log)
                    ),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
        }
    }

    /// Deletes the template; `false` when it was gone already.
    pub async fn delete_template(&self, template: &str) -> Result<bool, E2bError> {
        let label = format!("DELETE /templates/{template}");
        let mut call = self.call(
            Method::DELETE,
            self.url(&["templates", template], &[]),
            label,
        );
        call.accept = &[404];
        let answer = call.whole().await?;
        Ok(answer.status.as_u16() != 404)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_start_is_written_as_the_sdk_writes_it() {
        let start = BuildStart {
            from_template: "base",
            steps: vec![Step {
                kind: "RUN",
                args: vec!["echo hi".into(), "user".into()],
            }],
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            serde_json::json!({"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["echo hi", "user"]}]})
        );
        assert_eq!(tail(&"é".repeat(3000)).len(), LOG_TAIL);
    }
}

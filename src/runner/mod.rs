//! `agentform run`: drives every declared session through its steps, records
//! each as a transcript, checks expectations and reports.
//!
//! The runner never creates agents or environments; it needs them applied.

pub mod expect;
pub mod export;
pub mod report;
pub mod session;
#[cfg(test)]
mod session_tests;
pub mod transcript;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::plan::desired::{session_create_body, Outputs};
use crate::plan::{self, PlanOptions};
use crate::redact::Redactor;
use crate::runtime::{ErrorKind, Providers};
use crate::state::{now, HistoryEntry, StateStore, TranscriptEntry};
use transcript::{Footer, Header, Line, Sink};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Session names to run; empty means every session with steps.
    pub sessions: Vec<String>,
    pub concurrency: usize,
    /// Wall-clock limit for each session's whole conversation.
    pub timeout: Option<Duration>,
    /// Continue the recorded sessions instead of starting fresh ones.
    pub continue_sessions: bool,
    /// Write transcripts (benchmarks measure without them too).
    pub transcripts: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            sessions: Vec::new(),
            concurrency: 4,
            timeout: None,
            continue_sessions: false,
            transcripts: true,
        }
    }
}

/// Progress of a run, reported as it happens.
pub trait RunReporter: Send + Sync {
    fn started(&self, _address: &str) {}
    fn finished(&self, _outcome: &SessionOutcome) {}
}

pub struct Silent;
impl RunReporter for Silent {}

#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub address: String,
    pub session_id: String,
    pub footer: Footer,
    pub transcript: Option<PathBuf>,
}

impl SessionOutcome {
    pub fn passed(&self) -> bool {
        self.footer.passed
    }

    /// The outcome with its secrets masked (messages, replies, errors), as
    /// its transcript has them: what a report shows.
    pub fn redacted(mut self, redactor: &Redactor) -> Self {
        let mut footer = serde_json::to_value(&self.footer).unwrap_or_default();
        redactor.json(&mut footer);
        self.footer = match serde_json::from_value(footer) {
            Ok(f) => f,
            // Only strings changed, so this is not expected; should it
            // happen, a report loses its details rather than leak.
            Err(e) => Footer {
                passed: self.footer.passed,
                error: Some(format!("cannot mask the outcome's secrets: {e}")),
                ..Footer::default()
            },
        };
        self
    }

    /// `(message, detail)` per unmet expectation or error.
    pub fn failure_messages(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for step in &self.footer.steps {
            for e in step.expectations.iter().filter(|e| !e.passed) {
                out.push((
                    format!("step {}: {}", step.index + 1, e.expectation),
                    format!("{}\nsent: {}\nreply: {}", e.message, step.send, step.reply),
                ));
            }
            if let Some(err) = &step.error {
                out.push((err.clone(), format!("sent: {}", step.send)));
            }
        }
        if let Some(err) = &self.footer.error {
            if !out.iter().any(|(m, _)| m == err) {
                out.push((err.clone(), String::new()));
            }
        }
        out
    }
}

#[derive(Debug)]
pub struct RunReport {
    pub run_id: String,
    pub outcomes: Vec<SessionOutcome>,
    pub duration: Duration,
    /// Problems writing transcripts or the index; the run's results stand.
    pub write_errors: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(SessionOutcome::passed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("session `{0}` is not declared in the manifest")]
    UnknownSession(String),
    #[error("session `{0}` has no steps to run")]
    NoSteps(String),
    #[error("no session in the manifest has steps; add `steps:` to a session")]
    NothingToRun,
    #[error(
        "the manifest has changes that are not applied: {0}\nhint: run `agentform apply` first"
    )]
    NotApplied(String),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Other(String),
}

pub fn new_run_id() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{:04x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        fastrand::u16(..)
    )
}

pub async fn run(
    manifest: Arc<Manifest>,
    state: Arc<StateStore>,
    providers: Providers,
    options: &RunOptions,
    reporter: Arc<dyn RunReporter>,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let selected = select(&manifest, &options.sessions)?;

    // Running an outdated deployment would test something nobody declared.
    let pending = plan::plan(
        Some(&manifest),
        &state,
        &providers,
        &PlanOptions {
            targets: selected.clone(),
            parallelism: 1,
            ..Default::default()
        },
    )
    .await?;
    let changes: Vec<String> = pending.pending().map(|c| c.address.to_string()).collect();
    if !changes.is_empty() {
        return Err(RunError::NotApplied(changes.join(", ")));
    }

    let run_id = new_run_id();
    // Step messages may read more secrets while running: the redactor sees them.
    let redactor = manifest.secrets().redactor();
    let sink = Sink::start(redactor.clone());
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let digest = manifest.digest();
    for (i, addr) in selected.iter().enumerate() {
        let ctx = SessionRun {
            manifest: manifest.clone(),
            state: state.clone(),
            providers: providers.clone(),
            sink: sink.clone(),
            run_id: run_id.clone(),
            digest: digest.clone(),
            address: addr.clone(),
            options: options.clone(),
        };
        let sem = semaphore.clone();
        let reporter = reporter.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            reporter.started(&ctx.address.to_string());
            let outcome = ctx.run().await;
            reporter.finished(&outcome);
            (i, outcome)
        });
    }
    let mut outcomes: Vec<Option<SessionOutcome>> = vec![None; selected.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, o)) => outcomes[i] = Some(o),
            Err(e) => tracing::error!("a session task failed: {e}"),
        }
    }
    let mut write_errors = sink.shutdown().await;
    let outcomes: Vec<SessionOutcome> = outcomes
        .into_iter()
        .flatten()
        .map(|o| o.redacted(&redactor))
        .collect();
    if options.transcripts {
        let mut entries = Vec::new();
        for o in &outcomes {
            let Some(path) = &o.transcript else { continue };
            entries.push(TranscriptEntry {
                run_id: run_id.clone(),
                session: o.address.parse().map_err(RunError::Other)?,
                path: path
                    .strip_prefix(state.dir())
                    .unwrap_or(path)
                    .display()
                    .to_string(),
                passed: o.passed(),
                started_at: now(),
                events: o.footer.events,
                duration_ms: o.footer.duration_ms,
                session_id: Some(o.session_id.clone()).filter(|id| !id.is_empty()),
            });
        }
        if let Err(e) = state.put_transcripts(&entries) {
            write_errors.push(format!("indexing the transcripts: {e}"));
        }
    }
    Ok(RunReport {
        run_id,
        outcomes,
        duration: started.elapsed(),
        write_errors: write_errors.into_iter().map(|e| redactor.text(e)).collect(),
    })
}

fn select(manifest: &Manifest, names: &[String]) -> Result<Vec<Address>, RunError> {
    if names.is_empty() {
        let all: Vec<Address> = manifest
            .resources
            .iter()
            .filter(|r| r.script.as_ref().is_some_and(|s| !s.steps.is_empty()))
            .map(|r| r.address.clone())
            .collect();
        if all.is_empty() {
            return Err(RunError::NothingToRun);
        }
        return Ok(all);
    }
    let mut out = Vec::new();
    for n in names {
        let name = n.strip_prefix("session.").unwrap_or(n);
        let addr = Address::new(Kind::Session, name);
        let r = manifest
            .resource(&addr)
            .ok_or_else(|| RunError::UnknownSession(name.to_string()))?;
        if r.script.as_ref().is_none_or(|s| s.steps.is_empty()) {
            return Err(RunError::NoSteps(name.to_string()));
        }
        out.push(addr);
    }
    Ok(out)
}

struct SessionRun {
    manifest: Arc<Manifest>,
    state: Arc<StateStore>,
    providers: Providers,
    sink: Sink,
    run_id: String,
    digest: String,
    address: Address,
    options: RunOptions,
}

impl SessionRun {
    async fn run(self) -> SessionOutcome {
        let started = Instant::now();
        let key = self.address.to_string();
        let mut outcome = SessionOutcome {
            address: key.clone(),
            session_id: String::new(),
            footer: Footer::default(),
            transcript: None,
        };
        let fail = |mut o: SessionOutcome, msg: String| {
            o.footer.error = Some(msg);
            o.footer.passed = false;
            o.footer.duration_ms = started.elapsed().as_millis() as u64;
            o
        };
        let Some(resource) = self.manifest.resource(&self.address) else {
            return fail(outcome, "not in the manifest".into());
        };
        let Some(script) = resource.script.as_ref() else {
            return fail(outcome, "no steps".into());
        };
        let record = match self.state.get(&self.address) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return fail(
                    outcome,
                    format!("{key} is not applied; run `agentform apply` first"),
                )
            }
            Err(e) => return fail(outcome, e.to_string()),
        };
        let runtime = match self.providers.get(&record.provider) {
            Ok(r) => r,
            Err(e) => return fail(outcome, e.to_string()),
        };
        let session_id = if self.options.continue_sessions {
            record.remote_id.clone()
        } else {
            match self.fresh_session(&*runtime, record).await {
                Ok(id) => id,
                Err(e) => return fail(outcome, e),
            }
        };
        outcome.session_id = session_id.clone();
        let session = match runtime.retrieve_session(&session_id).await {
            Ok(s) => s,
            Err(e) => return fail(outcome, format!("cannot read session {session_id}: {e}")),
        };
        if self.options.transcripts {
            let path = self
                .state
                .dir()
                .join("transcripts")
                .join(&self.run_id)
                .join(format!("{}.jsonl", self.address.name));
            self.sink.open(&key, path.clone());
            outcome.transcript = Some(path);
        }
        self.sink.line(
            &key,
            Line::Header(Header {
                run_id: self.run_id.clone(),
                manifest_digest: self.digest.clone(),
                session: key.clone(),
                provider: runtime.name().to_string(),
                session_id: session_id.clone(),
                agent_id: session.agent_id().unwrap_or_default().to_string(),
                agent_version: session.agent_version(),
                agent_pinned: resource
                    .session
                    .as_ref()
                    .is_some_and(|t| t.version.is_some()),
                environment_id: session.environment_id.clone(),
                started_at: now(),
            }),
        );
        let timeout = self
            .options
            .timeout
            .or_else(|| {
                script
                    .timeout
                    .as_deref()
                    .and_then(crate::manifest::parse_duration)
            })
            .unwrap_or(Duration::from_secs(3600));
        let driver = session::Driver {
            runtime: runtime.clone(),
            session_id: session_id.clone(),
            script,
            templater: &self.manifest.templater,
            sink: &self.sink,
            key: key.clone(),
            workdir: &self.manifest.root,
            run_deadline: tokio::time::Instant::now() + timeout,
        };
        let driven = driver.drive().await;
        let passed = driven.error.is_none()
            && driven.steps.iter().all(|s| s.passed())
            && driven.steps.len() == script.steps.len();
        outcome.footer = Footer {
            passed,
            steps: driven.steps,
            usage: driven.usage,
            duration_ms: started.elapsed().as_millis() as u64,
            events: driven.events,
            error: driven.error,
        };
        self.sink.line(&key, Line::Footer(outcome.footer.clone()));
        self.sink.close(&key);
        outcome
    }

    /// Archives the recorded session and creates a new one like it, so a run
    /// never continues an old conversation.
    async fn fresh_session(
        &self,
        runtime: &dyn crate::runtime::Runtime,
        mut record: crate::state::ResourceRecord,
    ) -> Result<String, String> {
        match runtime.archive_session(&record.remote_id).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) if e.kind == ErrorKind::InvalidRequest && e.message.contains("archived") => {}
            Err(e) => {
                return Err(format!(
                    "cannot archive the previous session {}: {e}",
                    record.remote_id
                ))
            }
        }
        let mut body = session_create_body(&record.config);
        let mut meta: BTreeMap<String, Value> = body
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        meta.insert(META_ADDRESS.into(), Value::String(self.address.to_string()));
        meta.insert(
            META_MANIFEST.into(),
            Value::String(self.manifest.project.clone()),
        );
        body["metadata"] = serde_json::to_value(meta).unwrap_or_default();
        let created = runtime
            .create_session(body)
            .await
            .map_err(|e| format!("cannot start a fresh session: {e}"))?;
        record.remote_id = created.id.clone();
        record.remote_updated_at = Some(created.updated_at);
        record.updated_at = now();
        record.outputs = Outputs::from_record(&record).to_map();
        record.history.push(HistoryEntry {
            at: record.updated_at.clone(),
            action: format!("run {}", self.run_id),
            version: record.version,
            digest: record.digest.clone(),
        });
        self.state.put(&record).map_err(|e| e.to_string())?;
        Ok(created.id)
    }
}

//! The operations end to end over a temporary state and the local runtime,
//! without the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::apply::ApplyOptions;
use super::plan::{LockedError, PlanFailed};
use super::serve::{ServeError, ServeOptions};
use super::transcripts::TranscriptsError;
use crate::apply::Silent;
use crate::graph::Address;
use crate::manifest::{self, LoadOptions, Manifest};
use crate::plan::PlanOptions;
use crate::runtime::Providers;
use crate::state::{StateStore, TranscriptEntry};

const MANIFEST: &str = "version: 1\nname: ops\nenvironments:\n  data: { config: { type: cloud } }\nagents:\n  a: { model: claude-sonnet-4-6 }\nsessions:\n  s: { agent: a, environment: data }\n";

fn write(dir: &Path, yaml: &str) -> LoadOptions {
    let path = dir.join("agentform.yaml");
    std::fs::write(&path, yaml).unwrap();
    LoadOptions {
        files: vec![path],
        vars: Vec::new(),
        allow_empty: false,
    }
}

fn load(dir: &Path, yaml: &str) -> Manifest {
    manifest::load(&write(dir, yaml)).unwrap_or_else(|d| panic!("{}", d.render(false)))
}

fn open(dir: &Path, manifest: Option<&Manifest>) -> (StateStore, Providers) {
    let state = StateStore::open(&dir.join("state"), "test").unwrap();
    let providers = super::providers::providers(&state, manifest, |_| None).unwrap();
    (state, providers)
}

fn options() -> ApplyOptions {
    ApplyOptions {
        targets: Vec::new(),
        refresh: true,
        parallelism: 4,
        allow_empty: false,
    }
}

#[tokio::test]
async fn apply_writes_the_lock_file_that_a_locked_plan_checks() {
    let dir = tempfile::tempdir().unwrap();
    let m = load(dir.path(), MANIFEST);
    let (state, providers) = open(dir.path(), Some(&m));
    let pending = super::apply::plan(m, state, providers, &options())
        .await
        .unwrap();
    assert_eq!(pending.plan().summary.add, 3);
    let executed = pending.execute(Arc::new(Silent)).await.unwrap();
    assert!(executed.report.ok(), "{:#?}", executed.report);
    let lock = dir.path().join("agentform.lock");
    assert_eq!(executed.lock_written.as_deref(), Some(lock.as_path()));

    let m = load(dir.path(), MANIFEST);
    let (state, providers) = open(dir.path(), Some(&m));
    let planned = super::plan::plan(&m, &state, &providers, &PlanOptions::default(), true, false)
        .await
        .unwrap();
    assert!(!planned.plan.has_changes());
    assert!(planned.locked.is_ok());
    drop((state, providers));

    // Nothing to change and the lock already says so: nothing is written.
    let (state, providers) = open(dir.path(), Some(&m));
    let pending = super::apply::plan(m, state, providers, &options())
        .await
        .unwrap();
    assert!(!pending.plan().has_changes());
    assert_eq!(pending.finish_unchanged().unwrap(), None);
    drop(pending);

    let m = load(dir.path(), &MANIFEST.replace("sonnet", "haiku"));
    let (state, providers) = open(dir.path(), Some(&m));
    let planned = super::plan::plan(&m, &state, &providers, &PlanOptions::default(), true, false)
        .await
        .unwrap();
    match planned.locked {
        Err(LockedError::Differs { problems, .. }) => {
            assert_eq!(problems, ["agent.a would be updated to a new version"])
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&lock).unwrap();
    let err = super::plan::check_lock(&m, &planned.plan, &state).unwrap_err();
    assert!(err.to_string().starts_with("--locked: `"), "{err}");
    assert!(err
        .to_string()
        .ends_with("` does not exist; run `agentform apply` and commit the lock file"));
}

#[tokio::test]
async fn a_manifest_without_resources_over_a_recorded_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = load(dir.path(), MANIFEST);
    let (state, providers) = open(dir.path(), Some(&m));
    let pending = super::apply::plan(m, state, providers, &options())
        .await
        .unwrap();
    assert!(pending.execute(Arc::new(Silent)).await.unwrap().report.ok());

    let m = load(dir.path(), "version: 1\nname: ops\n");
    let (state, providers) = open(dir.path(), Some(&m));
    let plan_options = PlanOptions::default();
    let plan =
        |allow_empty| super::plan::plan(&m, &state, &providers, &plan_options, false, allow_empty);
    match plan(false).await {
        Err(PlanFailed::Empty(e)) => {
            assert_eq!(e.recorded, 3);
            let text = e.to_string();
            assert!(text.contains("`agentform destroy`"), "{text}");
            assert!(text.contains("`--allow-empty`"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // Asked for, it plans the removal of everything.
    let planned = plan(true).await.unwrap();
    assert_eq!(
        planned.plan.summary.destroy + planned.plan.summary.archive,
        3
    );
    // A destroy plan is what the refusal points to.
    let destroy = PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    };
    assert!(
        super::plan::plan(&m, &state, &providers, &destroy, false, false)
            .await
            .is_ok()
    );
    drop((state, providers));

    let (state, providers) = open(dir.path(), Some(&m));
    let refused = super::apply::plan(m, state, providers, &options()).await;
    assert!(matches!(refused, Err(PlanFailed::Empty(_))));
    let m = load(dir.path(), "version: 1\nname: ops\n");
    let (state, providers) = open(dir.path(), Some(&m));
    let allowed = ApplyOptions {
        allow_empty: true,
        ..options()
    };
    let pending = super::apply::plan(m, state, providers, &allowed)
        .await
        .unwrap();
    assert!(pending.plan().has_changes());
}

#[tokio::test]
async fn destroy_works_from_the_state_alone() {
    let dir = tempfile::tempdir().unwrap();
    let m = load(dir.path(), MANIFEST);
    let (state, providers) = open(dir.path(), Some(&m));
    let pending = super::apply::plan(m, state, providers, &options())
        .await
        .unwrap();
    assert!(pending.execute(Arc::new(Silent)).await.unwrap().report.ok());

    let options = write(dir.path(), "version: 1\nagents: [not, a, map]\n");
    assert!(
        super::destroy::manifest(&options).is_err(),
        "a broken manifest is an error"
    );
    std::fs::remove_file(&options.files[0]).unwrap();
    let m = super::destroy::manifest(&options).unwrap();
    assert!(m.is_none());
    let (state, providers) = open(dir.path(), None);
    let pending = super::destroy::plan(m, state, providers, &[], 4)
        .await
        .unwrap();
    assert_eq!(pending.plan().summary.destroy, 2);
    assert_eq!(pending.plan().summary.archive, 1);
    let executed = pending.execute(Arc::new(Silent)).await.unwrap();
    assert!(executed.report.ok(), "{:#?}", executed.report);
    assert_eq!(executed.lock_written, None);
    let (state, _) = open(dir.path(), None);
    assert!(super::state::list(&state).unwrap().is_empty());
}

#[test]
fn state_show_and_rm_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = open(dir.path(), None);
    let a: Address = "agent.ghost".parse().unwrap();
    for err in [
        super::state::show(&state, &a).unwrap_err(),
        super::state::rm(&state, &a).unwrap_err(),
    ] {
        assert_eq!(
            err.to_string(),
            "`agent.ghost` is not in the state\nhint: `agentform state list` shows what is"
        );
    }
}

fn entry(run: &str, session: &str) -> TranscriptEntry {
    TranscriptEntry {
        run_id: run.into(),
        session: format!("session.{session}").parse().unwrap(),
        path: format!("transcripts/{run}/{session}.jsonl"),
        passed: true,
        started_at: "2026-01-01T00:00:00Z".into(),
        events: 3,
        duration_ms: 10,
        session_id: None,
    }
}

#[test]
fn transcripts_are_found_by_run_and_session() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = open(dir.path(), None);
    let find = |r: &str| super::transcripts::find(&state, r);
    assert!(matches!(
        find("latest/a"),
        Err(TranscriptsError::NoneRecorded)
    ));
    state
        .put_transcripts(&[
            entry("20260101-000000-aaaa", "a"),
            entry("20260102-000000-bbbb", "a"),
            entry("20260102-000000-bbbb", "b"),
        ])
        .unwrap();
    let found = find("latest/session.b").unwrap();
    assert_eq!(
        (found.run_id.as_str(), found.session.name.as_str()),
        ("20260102-000000-bbbb", "b")
    );
    assert_eq!(find("20260101-000000-aaaa").unwrap().session.name, "a");
    assert_eq!(
        find("latest").unwrap_err().to_string(),
        "run `20260102-000000-bbbb` has 2 sessions; name one: 20260102-000000-bbbb/a, 20260102-000000-bbbb/b"
    );
    assert_eq!(
        find("latest/c").unwrap_err().to_string(),
        "run `20260102-000000-bbbb` has no transcript of session `c`"
    );
    assert!(matches!(find("nope/a"), Err(TranscriptsError::NoRun(r)) if r == "nope"));
    assert!(matches!(
        super::transcripts::read(&state, "latest/a"),
        Err(TranscriptsError::Read(_))
    ));
}

#[test]
fn serving_beyond_loopback_needs_consent_and_a_key() {
    let options = |listen: &str, key: Option<&str>, allow_remote| ServeOptions {
        listen: listen.parse().unwrap(),
        data: PathBuf::from("unused"),
        allow_remote,
        latency: Default::default(),
        drop_stream_after: None,
        unconfined: false,
        server: crate::serve::Options {
            api_key: key.map(String::from),
            ..Default::default()
        },
    };
    assert!(options("127.0.0.1:0", None, false).check().is_ok());
    assert!(matches!(
        options("127.0.0.1:0", Some("  "), false).check(),
        Err(ServeError::EmptyApiKey)
    ));
    assert!(matches!(
        options("0.0.0.0:0", Some("k"), false).check(),
        Err(ServeError::Remote(_))
    ));
    assert!(matches!(
        options("0.0.0.0:0", None, true).check(),
        Err(ServeError::RemoteWithoutKey(_))
    ));
    assert!(options("0.0.0.0:0", Some("k"), true).check().is_ok());
}

#[test]
fn validate_counts_each_kind() {
    let dir = tempfile::tempdir().unwrap();
    let counts = super::validate::validate(&load(dir.path(), MANIFEST));
    assert_eq!(
        counts,
        super::validate::Counts {
            resources: 3,
            environments: 1,
            agents: 1,
            sessions: 1,
            files: 1
        }
    );
}

#[test]
fn the_manifest_names_its_secrets_and_validate_warns_about_short_ones() {
    let dir = tempfile::tempdir().unwrap();
    let m = load(
        dir.path(),
        "version: 1\nenvironments:\n  data: { config: { type: cloud } }\n\
         agents:\n  a:\n    model: claude-sonnet-4-6\n    system: \"{{ env('AGENTFORM_OPS_UNSET_1', 'default-secret-1') }} {{ env('AGENTFORM_OPS_UNSET_2', 'x') }}\"\n\
         sessions:\n  s:\n    agent: a\n    environment: data\n    resources:\n\
         \x20     - { type: github_repository, url: \"https://github.com/e/app\", authorization_token: ghp_literal-token-0001 }\n",
    );
    let secrets = m.secrets();
    assert_eq!(
        secrets.lookup("$AGENTFORM_OPS_UNSET_1").as_deref(),
        Some("default-secret-1")
    );
    assert_eq!(
        secrets
            .lookup("#session.s.resources[0].authorization_token")
            .as_deref(),
        Some("ghp_literal-token-0001")
    );
    let masked = secrets
        .redactor()
        .text("a default-secret-1 b ghp_literal-token-0001 c x".into());
    assert_eq!(masked, "a (sensitive) b (sensitive) c x");
    // Values read later (a step's message while running) join the same table.
    m.templater
        .render_with(
            "{{ env('AGENTFORM_OPS_UNSET_3', 'later-secret-3') }}",
            &serde_json::json!({}),
        )
        .unwrap();
    assert_eq!(
        secrets.redactor().text("later-secret-3".into()),
        "(sensitive)"
    );
    let warnings = super::validate::secret_warnings(&m);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "the value of `AGENTFORM_OPS_UNSET_2` (read with `env()`) has 1 character,"
        ),
        "{}",
        warnings[0]
    );
}

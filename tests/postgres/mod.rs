//! The PostgreSQL state against a real server: a throwaway cluster
//! (`cluster.rs`) and a database of its own per test. Shared state between
//! checkouts (`shared.rs`), locking across processes (`locking.rs`),
//! faults mid-apply (`faults.rs`), refusals before anything changes
//! (`errors.rs`), and copying a state between backends (`migrate.rs`).

mod cluster;
mod errors;
mod faults;
mod locking;
mod migrate;
mod shared;

use std::collections::BTreeMap;

use crate::common::*;
pub use cluster::cluster;

/// A checkout in a directory of its own whose state is `url`.
pub fn checkout(url: &str) -> Test {
    Test::new().env("AGENTFORM_STATE", url)
}

/// A fresh database's state URL.
pub fn fresh_state() -> String {
    let c = cluster();
    c.url(&c.database())
}

/// `n` agents and their sessions in one environment.
pub fn manifest(n: usize) -> String {
    let mut m = String::from(
        "version: 1\nname: team\nenvironments:\n  box:\n    config: { type: cloud }\nagents:\n",
    );
    for i in 0..n {
        m.push_str(&format!(
            "  a{i}:\n    model: claude-sonnet-4-6\n    system: agent number {i}\n"
        ));
    }
    m.push_str("sessions:\n");
    for i in 0..n {
        m.push_str(&format!("  s{i}:\n    agent: a{i}\n    environment: box\n"));
    }
    m
}

/// The address tags of the live (not archived) objects of the local runtime
/// kept in the state at `url`, sorted.
pub fn live_tags(url: &str) -> Vec<String> {
    use agentform::runtime::{list_all, Runtime};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let location = agentform::state::Location::parse(url).expect("url");
        let options = agentform::state::OpenOptions {
            lock_timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let state =
            agentform::state::StateStore::open_at(&location, "test", &options).expect("open state");
        let local = agentform::runtime::local::LocalRuntime::open(state.db(), Default::default())
            .expect("local runtime");
        let local = &local;
        let tag =
            |m: &BTreeMap<String, String>| m.get("agentform.address").cloned().unwrap_or_default();
        let mut tags: Vec<String> = list_all(|q| async move { local.list_agents(&q).await })
            .await
            .expect("agents")
            .iter()
            .filter(|a| a.archived_at.is_none())
            .map(|a| tag(&a.metadata))
            .collect();
        tags.extend(
            list_all(|q| async move { local.list_environments(&q).await })
                .await
                .expect("environments")
                .iter()
                .map(|e| tag(&e.metadata)),
        );
        tags.extend(
            list_all(|q| async move { local.list_sessions(&q).await })
                .await
                .expect("sessions")
                .iter()
                .map(|s| tag(&s.metadata)),
        );
        tags.sort();
        tags
    })
}

/// Every declared address of [`manifest`]`(n)` has exactly one live object
/// and one record.
#[track_caller]
pub fn assert_converged(t: &Test, url: &str, n: usize) {
    let mut expected: Vec<String> = vec!["environment.box".into()];
    for i in 0..n {
        expected.push(format!("agent.a{i}"));
        expected.push(format!("session.s{i}"));
    }
    expected.sort();
    assert_eq!(
        live_tags(url),
        expected,
        "live objects differ from the manifest (duplicates or missing)"
    );
    let listed = t.run(&["state", "list"]).success().stdout;
    assert_eq!(listed.lines().count(), expected.len(), "{listed}");
}

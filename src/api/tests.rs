//! Records as the local runtime stored them before the records were typed
//! (`testdata/stored_records.json`, written by that version: an agent with
//! the full toolset, an MCP toolset, a custom tool and a coordinator team,
//! one with a `multiagent_20261001` team, environments with limited
//! networking and packages, and sessions with resources and usage) decode
//! into the typed records and encode back to the same JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::agent::{Effort, ExecutionIdentity, McpServer, Skill, Speed};
use super::environment::{EnvironmentConfig, Networking};
use super::multiagent::{CoordinatorAgent, InlineAgents, Multiagent, MultiagentAdvisor, Team};
use super::resource::{Checkout, MemoryAccess, SessionResource};
use super::tool::{PermissionPolicy, Tool, ToolFilter, UserInputSource};
use super::{Agent, Environment, Session};

fn stored(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(include_str!("testdata/stored_records.json")).expect("stored records");
    all[name].clone()
}

/// Decodes `name` and checks it encodes back to exactly what was stored.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let raw = stored(name);
    let bytes = serde_json::to_vec(&raw).expect("bytes");
    let typed: T = serde_json::from_slice(&bytes).expect(name);
    assert_eq!(serde_json::to_value(&typed).expect("encode"), raw, "{name}");
    typed
}

/// No part of a stored record fell back to raw JSON.
fn assert_no_fallback(value: &impl std::fmt::Debug) {
    let shown = format!("{value:?}");
    assert!(!shown.contains("Other("), "{shown}");
}

#[test]
fn stored_agents_decode_typed_and_encode_unchanged() {
    for name in ["helper", "full", "modern"] {
        let agent: Agent = round_trip(name);
        assert_no_fallback(&agent);
    }

    let full: Agent = round_trip("full");
    assert_eq!(full.model.effort, Some(Effort::High));
    assert_eq!(full.model.speed, Some(Speed::Fast));
    assert_eq!(full.model.inference_geo.as_deref(), Some("us"));
    assert!(matches!(
        full.execution_identity,
        Some(ExecutionIdentity::AwsRole { .. })
    ));
    assert!(matches!(&full.mcp_servers[0], McpServer::Url { name, .. } if name == "docs"));
    assert!(matches!(&full.skills[1], Skill::Custom { version, .. } if version == "3"));
    let Tool::AgentToolset(toolset) = &full.tools[0] else {
        panic!("{:?}", full.tools[0]);
    };
    assert_eq!(toolset.configs.len(), 8);
    assert_eq!(toolset.configs[1].permission_policy, PermissionPolicy::Auto);
    let fetch = &toolset.configs[6];
    assert_eq!(fetch.max_content_tokens, Some(5000));
    let sources = fetch.url_sources.as_ref().expect("url_sources");
    assert!(
        matches!(&sources.client_tool_results, Some(ToolFilter::Only { tools }) if tools[0].name == "lookup")
    );
    assert_eq!(sources.server_tool_results, Some(ToolFilter::All));
    assert_eq!(sources.user_input, Some(UserInputSource::None));
    let location = toolset.configs[7].user_location.as_ref().expect("location");
    assert_eq!(location.city.as_deref(), Some("Paris"));
    assert!(matches!(&full.tools[1], Tool::McpToolset(m) if m.configs.len() == 2));
    assert!(
        matches!(&full.tools[2], Tool::Custom(c) if c.input_schema["required"] == json!(["q"]))
    );
    let Some(Multiagent::Coordinator { agents }) = &full.multiagent else {
        panic!("{:?}", full.multiagent);
    };
    assert!(matches!(&agents[0], CoordinatorAgent::Agent(r) if r.version == 1));
    assert!(matches!(&agents[2], CoordinatorAgent::Advisor(a) if a.model == "claude-opus-4-7"));

    let modern: Agent = round_trip("modern");
    let Some(Multiagent::Teams {
        advisor,
        subagents,
        workflows,
    }) = &modern.multiagent
    else {
        panic!("{:?}", modern.multiagent);
    };
    assert!(matches!(advisor, MultiagentAdvisor::Enabled { .. }));
    assert!(matches!(
        subagents,
        Team::Enabled { inline_agents: InlineAgents::Disabled, predefined_agents } if predefined_agents.len() == 1
    ));
    assert_eq!(*workflows, Team::Disabled);
}

#[test]
fn stored_environments_decode_typed_and_encode_unchanged() {
    for name in ["plain_env", "env", "selfhosted"] {
        let environment: Environment = round_trip(name);
        assert_no_fallback(&environment);
    }
    let env: Environment = round_trip("env");
    let EnvironmentConfig::Cloud(cloud) = &env.config else {
        panic!("{:?}", env.config);
    };
    let Networking::Limited(limited) = &cloud.networking else {
        panic!("{:?}", cloud.networking);
    };
    assert!(limited.allow_mcp_servers && limited.allow_package_managers);
    assert_eq!(limited.allowed_hosts, ["api.example.com"]);
    assert_eq!(cloud.packages.go, ["golang.org/x/tools"]);
    let selfhosted: Environment = round_trip("selfhosted");
    assert_eq!(selfhosted.config, EnvironmentConfig::SelfHosted);
}

#[test]
fn stored_sessions_decode_typed_and_encode_unchanged() {
    for name in ["s1", "s2", "s3", "s4"] {
        let session: Session = round_trip(name);
        assert_no_fallback(&session);
    }
    let s1: Session = round_trip("s1");
    let Some(Multiagent::Coordinator { agents }) = &s1.agent.multiagent else {
        panic!("{:?}", s1.agent.multiagent);
    };
    assert!(matches!(&agents[0], CoordinatorAgent::Agent(a) if a.name == "helper"));
    assert!(matches!(&agents[1], CoordinatorAgent::Agent(a) if a.tools.len() == 3));
    assert!(matches!(&agents[2], CoordinatorAgent::Advisor(_)));
    assert!(matches!(
        &s1.resources[0],
        SessionResource::GithubRepository(r) if r.checkout == Some(Checkout::Branch { name: "main".into() })
    ));
    assert!(matches!(&s1.resources[2], SessionResource::File(f) if f.file_id == "file_01xyz"));
    assert!(matches!(
        &s1.resources[3],
        SessionResource::MemoryStore(m) if m.access == Some(MemoryAccess::ReadOnly) && m.instructions.is_some()
    ));

    let s2: Session = round_trip("s2");
    assert!(matches!(
        &s2.agent.multiagent,
        Some(Multiagent::Teams { subagents: Team::Enabled { predefined_agents, .. }, .. })
            if predefined_agents[0].name == "helper"
    ));
    assert_eq!(s2.stats.active_seconds, Some(0.0));
    assert_eq!(s2.usage, Default::default());

    let s4: Session = round_trip("s4");
    assert_eq!(s4.usage.input_tokens, Some(10));
    let cache = s4.usage.cache_creation.as_ref().expect("cache_creation");
    assert_eq!(cache.ephemeral_1h_input_tokens, Some(0));
    assert_eq!(cache.ephemeral_5m_input_tokens, Some(1));
}

#[test]
fn unknown_shapes_pass_through_untouched() {
    let tool = json!({"type": "browser_20270101", "display": {"width": 1024}});
    let parsed: Tool = serde_json::from_value(tool.clone()).expect("tool");
    assert_eq!(parsed, Tool::Other(tool.clone()));
    assert_eq!(serde_json::to_value(&parsed).expect("encode"), tool);

    let config = json!({"type": "gpu", "accelerator": "h100"});
    let parsed: EnvironmentConfig = serde_json::from_value(config.clone()).expect("config");
    assert_eq!(serde_json::to_value(&parsed).expect("encode"), config);

    let resource = json!({"type": "vault_secret", "id": "x"});
    let parsed: SessionResource = serde_json::from_value(resource.clone()).expect("resource");
    assert_eq!(parsed, SessionResource::Other(resource));

    let policy: PermissionPolicy =
        serde_json::from_value(json!({"type": "ask_once"})).expect("policy");
    assert_eq!(policy.name(), Some("ask_once"));
}

#[test]
fn a_lean_session_agent_still_parses() {
    let session: Session = serde_json::from_value(json!({
        "id": "sesn_01", "type": "session", "status": "idle", "title": null,
        "agent": {"id": "agent_01", "version": 1, "type": "agent"},
        "archived_at": null, "created_at": "t", "updated_at": "t",
        "environment_id": "env_01", "metadata": {},
        "outcome_evaluations": [], "resources": [], "stats": {}, "usage": {}, "vault_ids": []
    }))
    .expect("session");
    assert_eq!(session.agent_id(), Some("agent_01"));
    assert_eq!(session.agent_version(), Some(1));
    assert!(session.agent.tools.is_empty());
}

#[test]
fn the_level_lists_match_the_wire_names() {
    for level in Effort::LEVELS {
        let effort = Effort::from_level(level).expect(level);
        assert_eq!(
            serde_json::to_value(effort).expect("encode"),
            json!({"type": level})
        );
    }
    for name in PermissionPolicy::NAMES {
        let policy = PermissionPolicy::from_name(name).expect(name);
        assert_eq!(
            serde_json::to_value(policy).expect("encode"),
            json!({"type": name})
        );
    }
    for name in Speed::NAMES {
        let speed = Speed::from_name(name).expect(name);
        assert_eq!(serde_json::to_value(speed).expect("encode"), json!(name));
    }
    for name in MemoryAccess::NAMES {
        let access = MemoryAccess::from_name(name).expect(name);
        assert_eq!(serde_json::to_value(access).expect("encode"), json!(name));
    }
}

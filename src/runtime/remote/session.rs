//! A remote-loop session's life: made with a sandbox of its own (the
//! sandboxes a crashed earlier attempt left for the same address killed
//! first), the serve launched in it, the session's environment, agent
//! version and session created there; its answers mapped back to
//! agentform's ids; listed through the sandboxes that run one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::launch::{self, Launch, SERVE_KEY_ENV};
use super::sandbox::NewSandbox;
use super::{
    serve_key, session_id, Client, RemoteRuntime, LOOP_REMOTE, META_AGENT, META_AGENT_VERSION,
    META_ENVIRONMENT, META_LOOP,
};
use crate::api::environment::EnvironmentConfig;
use crate::api::META_ADDRESS;
use crate::api::META_MANIFEST;
use crate::runtime::local::image_of;
use crate::runtime::{Agent, Environment, ListQuery, Page, Result, Runtime, RuntimeError, Session};
use crate::sandbox::Network;

/// Creates the session: sandbox, serve, then the serve's objects.
pub(super) async fn create(rt: &RemoteRuntime, body: Value) -> Result<Session> {
    let (agent_id, version) = agent_of(&body)?;
    let environment_id = body
        .get("environment_id")
        .and_then(Value::as_str)
        .ok_or_else(|| RuntimeError::invalid("a session needs `environment_id`"))?
        .to_owned();
    let agent = rt.local.retrieve_agent(&agent_id, version).await?;
    let environment = rt.local.retrieve_environment(&environment_id).await?;
    if agent.archived_at.is_some() {
        return Err(RuntimeError::invalid(format!(
            "agent `{agent_id}` is archived"
        )));
    }
    if environment.archived_at.is_some() {
        return Err(RuntimeError::invalid(format!(
            "environment `{environment_id}` is archived"
        )));
    }
    if agent.multiagent.is_some() {
        return Err(RuntimeError::invalid(format!(
            "agent `{agent_id}` leads a team; the `{}` provider runs single agents only",
            rt.host.provider()
        )));
    }
    let executable = rt.executable().await?;
    let user_meta = string_map(body.get("metadata"));
    let mut metadata = BTreeMap::from([
        (META_LOOP.to_owned(), LOOP_REMOTE.to_owned()),
        (META_AGENT.to_owned(), agent.id.clone()),
        (META_AGENT_VERSION.to_owned(), agent.version.to_string()),
        (META_ENVIRONMENT.to_owned(), environment.id.clone()),
    ]);
    for key in [META_ADDRESS, META_MANIFEST] {
        if let Some(v) = user_meta.get(key) {
            metadata.insert(key.to_owned(), v.clone());
        }
    }
    // Phase times, for the debug log (what a slow apply waits for).
    let began = std::time::Instant::now();
    kill_leftovers(rt, &metadata).await?;
    let listed = began.elapsed();
    let new = NewSandbox {
        metadata: metadata.clone(),
        network: network_of(&environment),
        model_hosts: rt.options.model_hosts.clone(),
        header_rules: rt.options.header_rules.clone(),
        idempotency_key: idempotency_key(),
        packages: image_of(&environment).packages,
    };
    let sandbox = rt.host.create(&new).await.map_err(|e| rt.error(e))?;
    let sandbox_id = sandbox.id().to_owned();
    let created_at = began.elapsed();
    tracing::info!(sandbox = %sandbox_id, agent = %agent.id, "created a sandbox for a session");
    let made = async {
        let mut envs: BTreeMap<String, String> = rt
            .options
            .model_envs
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        envs.insert(
            SERVE_KEY_ENV.to_owned(),
            serve_key(rt.options.key.expose(), &sandbox_id),
        );
        let port = launch::launch(
            sandbox.as_ref(),
            Launch {
                executable,
                manifest: &rt.options.manifest,
                envs,
                deadline: rt.options.ready_deadline,
            },
        )
        .await
        .map_err(|e| rt.error(e))?;
        let launched_at = began.elapsed();
        let client = Arc::new(rt.client(Arc::clone(&sandbox), port, metadata)?);
        let remote_env = client
            .api
            .create_environment(environment_body(
                &environment,
                rt.host.preinstalls_packages(),
            ))
            .await?;
        let remote_agent = client.api.create_agent(agent_body(&agent)).await?;
        let mut session_body = body.clone();
        session_body["agent"] = json!({
            "type": "agent", "id": remote_agent.id, "version": remote_agent.version
        });
        session_body["environment_id"] = Value::String(remote_env.id);
        let created = client.api.create_session(session_body).await?;
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        tracing::debug!(
            sandbox = %sandbox_id,
            list_ms = ms(listed),
            create_ms = ms(created_at - listed),
            launch_ms = ms(launched_at - created_at),
            objects_ms = ms(began.elapsed() - launched_at),
            "session phases"
        );
        Ok::<_, RuntimeError>((client, created))
    }
    .await;
    match made {
        Ok((client, created)) => {
            rt.lock_clients()
                .insert(sandbox_id.clone(), Arc::clone(&client));
            Ok(map_back(created, &client))
        }
        Err(e) => {
            // Nothing records the sandbox: it must not outlive the failure.
            if let Err(k) = rt.host.kill(&sandbox_id).await {
                tracing::warn!(sandbox = %sandbox_id, "cannot kill a sandbox whose session failed: {}", k.message);
            }
            Err(RuntimeError::new(
                e.kind,
                format!(
                    "starting the session in sandbox `{sandbox_id}`: {}",
                    e.message
                ),
            ))
        }
    }
}

/// The serve's session in agentform's terms: its id joined with the
/// sandbox's, the agent and environment ids agentform's own.
pub(super) fn map_back(mut s: Session, client: &Client) -> Session {
    s.id = session_id(&s.id, client.sandbox.id());
    if let Some(agent) = client.metadata.get(META_AGENT) {
        s.agent.id = agent.clone();
    }
    if let Some(v) = client
        .metadata
        .get(META_AGENT_VERSION)
        .and_then(|v| v.parse().ok())
    {
        s.agent.version = v;
    }
    if let Some(env) = client.metadata.get(META_ENVIRONMENT) {
        s.environment_id = env.clone();
    }
    s
}

/// Every session of every sandbox running a remote loop, in one page.
pub(super) async fn list(rt: &RemoteRuntime, query: &ListQuery) -> Result<Page<Session>> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let listed = rt
        .host
        .list(&[(META_LOOP, LOOP_REMOTE)])
        .await
        .map_err(|e| rt.error(e))?;
    let include_archived = query.include_archived;
    // Each sandbox is its own server: asked side by side.
    let per_sandbox: Vec<Vec<Session>> = stream::iter(listed)
        .map(|sandbox| sessions_in(rt, sandbox.id, include_archived))
        .buffer_unordered(LIST_PARALLELISM)
        .try_collect()
        .await?;
    Ok(Page {
        data: per_sandbox.into_iter().flatten().collect(),
        next_page: None,
    })
}

/// Sandboxes asked at once when sessions are listed.
const LIST_PARALLELISM: usize = 16;

/// The sessions of the serve in one sandbox; none when it is gone.
async fn sessions_in(
    rt: &RemoteRuntime,
    sandbox: String,
    include_archived: bool,
) -> Result<Vec<Session>> {
    let of = format!("in sandbox {sandbox}");
    let client = match rt.client_of(&sandbox, &of).await {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let sessions = crate::runtime::list_all(|q| {
        let client = Arc::clone(&client);
        let q = ListQuery {
            include_archived,
            ..q
        };
        async move { client.api.list_sessions(&q).await }
    })
    .await;
    match rt.settle(&of, &sandbox, sessions).await {
        Ok(sessions) => Ok(sessions.into_iter().map(|s| map_back(s, &client)).collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Sandboxes made for this address and manifest that nothing records (an
/// earlier attempt crashed before the state was written): killed.
async fn kill_leftovers(rt: &RemoteRuntime, metadata: &BTreeMap<String, String>) -> Result<()> {
    let (Some(address), Some(manifest)) = (metadata.get(META_ADDRESS), metadata.get(META_MANIFEST))
    else {
        return Ok(());
    };
    let filter = [
        (META_LOOP, LOOP_REMOTE),
        (META_ADDRESS, address.as_str()),
        (META_MANIFEST, manifest.as_str()),
    ];
    let found = rt.host.list(&filter).await.map_err(|e| rt.error(e))?;
    for listed in found {
        let ours = filter
            .iter()
            .all(|(k, v)| listed.metadata.get(*k).map(String::as_str) == Some(*v));
        if ours {
            tracing::info!(sandbox = %listed.id, %address, "killing a sandbox left by an earlier attempt");
            rt.forget(&listed.id);
            rt.host.kill(&listed.id).await.map_err(|e| rt.error(e))?;
        }
    }
    Ok(())
}

/// The agent id and pinned version of a session body.
fn agent_of(body: &Value) -> Result<(String, Option<u64>)> {
    match body.get("agent") {
        Some(Value::String(id)) => Ok((id.clone(), None)),
        Some(Value::Object(o)) => {
            let id = o
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| RuntimeError::invalid("`agent.id` is required"))?;
            Ok((id.to_owned(), o.get("version").and_then(Value::as_u64)))
        }
        _ => Err(RuntimeError::invalid("a session needs `agent`")),
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// What commands in the sandbox may reach: the environment's networking.
fn network_of(environment: &Environment) -> Network {
    use crate::api::environment::{EnvironmentConfig, Networking};
    match &environment.config {
        EnvironmentConfig::Cloud(c) => match &c.networking {
            Networking::Limited(l) => Network::Limited {
                allowed_hosts: l.allowed_hosts.clone(),
                allow_package_managers: l.allow_package_managers,
            },
            _ => Network::Unrestricted,
        },
        _ => Network::Unrestricted,
    }
}

/// The body that makes `object` again elsewhere: its JSON without the
/// fields the server sets.
fn body_of(object: Value, drop: &[&str]) -> Value {
    let mut map: Map<String, Value> = match object {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for key in drop {
        map.remove(*key);
    }
    map.retain(|_, v| !v.is_null());
    Value::Object(map)
}

/// The environment as the serve creates it; without the pip and npm
/// packages when the sandbox's image holds them already.
fn environment_body(environment: &Environment, preinstalled: bool) -> Value {
    let mut environment = environment.clone();
    if let (true, EnvironmentConfig::Cloud(cloud)) = (preinstalled, &mut environment.config) {
        cloud.packages.pip.clear();
        cloud.packages.npm.clear();
    }
    body_of(
        serde_json::to_value(&environment).unwrap_or_default(),
        &[
            "id",
            "archived_at",
            "created_at",
            "updated_at",
            "type",
            "scope",
        ],
    )
}

fn agent_body(agent: &Agent) -> Value {
    body_of(
        serde_json::to_value(agent).unwrap_or_default(),
        &[
            "id",
            "archived_at",
            "created_at",
            "updated_at",
            "type",
            "version",
            "multiagent",
        ],
    )
}

/// `[a-z0-9-]`, one per creation: retries of it share it.
fn idempotency_key() -> String {
    format!(
        "agentform-remote-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

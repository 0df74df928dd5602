//! Tools in a turn: which the agent may use and under which permission
//! policy, the `agent.tool_use` / `agent.custom_tool_use` events that ask
//! for them, running built-in tools in the session's sandbox, and their
//! results.
//!
//! Tools run only through [`Sandbox`], opened by the engine's
//! [`SandboxProvider`] from a [`SandboxSpec`]; this file must not know which
//! sandbox that is. Custom tools are run by the user, who answers with
//! `user.custom_tool_result`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::hub::Slot;
use super::worker::Worker;
use crate::api::environment::{EnvironmentConfig, Networking};
use crate::api::event::{
    AgentCustomToolUse, AgentToolResult, AgentToolUse, AutoPermission, ContentBlock, Event,
    Permission, ToolEvaluation,
};
use crate::api::tool::CustomTool;
use crate::api::{Environment, Result, Tool, META_ADDRESS};
use crate::sandbox::{tools, Network, Packages, Sandbox, SandboxProvider, SandboxSpec};

impl Worker {
    /// Emits the tool use the model asked for: allowed or asking by the
    /// tool's policy, a custom tool's use, or denied (with its error result)
    /// when the agent has no such tool.
    pub(super) async fn emit_tool_use(
        &mut self,
        name: &str,
        input: Map<String, Value>,
    ) -> Result<()> {
        let tools = &self.session.agent.tools;
        if let Some(policy) = builtin_policy(tools, name) {
            let (permission, evaluation) = match policy.as_str() {
                "always_allow" => (Permission::Allow, ToolEvaluation::AlwaysAllow),
                "always_ask" => (Permission::Ask, ToolEvaluation::AlwaysAsk),
                // No classifier runs locally: `auto` asks.
                _ => (
                    Permission::Ask,
                    ToolEvaluation::Auto {
                        evaluated_permission: AutoPermission::Ask {
                            reason_code: "indeterminate".to_owned(),
                        },
                    },
                ),
            };
            self.emit(|id, processed_at| {
                Event::AgentToolUse(AgentToolUse {
                    id,
                    name: name.to_owned(),
                    input,
                    evaluated_permission: Some(permission),
                    evaluation: Some(evaluation),
                    processed_at,
                })
            })
            .await?;
        } else if custom_tools(tools).any(|t| t.name == name) {
            self.emit(|id, processed_at| {
                Event::AgentCustomToolUse(AgentCustomToolUse {
                    id,
                    name: name.to_owned(),
                    input,
                    processed_at,
                })
            })
            .await?;
        } else {
            let id = self
                .emit(|id, processed_at| {
                    Event::AgentToolUse(AgentToolUse {
                        id,
                        name: name.to_owned(),
                        input,
                        evaluated_permission: Some(Permission::Deny),
                        evaluation: None,
                        processed_at,
                    })
                })
                .await?;
            let message = format!("tool `{name}` is not available to this agent");
            self.tool_result(&id, &message, true).await?;
        }
        Ok(())
    }

    pub(super) async fn tool_result(
        &mut self,
        tool_use_id: &str,
        text: &str,
        is_error: bool,
    ) -> Result<()> {
        let content = if text.is_empty() {
            Vec::new()
        } else {
            vec![ContentBlock::text(text)]
        };
        self.emit(|id, processed_at| {
            Event::AgentToolResult(AgentToolResult {
                id,
                tool_use_id: tool_use_id.to_owned(),
                content: Some(content),
                is_error: Some(is_error),
                processed_at,
            })
        })
        .await
        .map(drop)
    }

    /// Runs a built-in tool in the session's sandbox; an error when the
    /// sandbox cannot be had.
    pub(super) async fn run_tool(
        &self,
        name: &str,
        input: &Value,
    ) -> Result<tools::ToolResult, String> {
        let sandbox = self.sandbox().await?;
        Ok(tools::run(
            sandbox.as_ref(),
            name,
            input,
            self.ctx.options.tool_deadline,
        )
        .await)
    }

    /// The session's sandbox, opened before its first tool call, with the
    /// environment's packages and networking.
    async fn sandbox(&self) -> Result<Arc<dyn Sandbox>, String> {
        let mut cached = self.slot.sandbox.lock().await;
        if let Some(sandbox) = cached.as_ref() {
            return Ok(Arc::clone(sandbox));
        }
        let env_id = &self.session.environment_id;
        let environment = self
            .ctx
            .store
            .environment(env_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("tools cannot run: environment `{env_id}` no longer exists"))?;
        let mut spec = sandbox_spec(self.id(), &environment);
        spec.session_address = self.session.metadata.get(META_ADDRESS).cloned();
        let sandbox = self
            .ctx
            .options
            .sandboxes
            .open(&spec)
            .await
            .map_err(|e| format!("tools cannot run: {e}"))?;
        *cached = Some(Arc::clone(&sandbox));
        Ok(sandbox)
    }
}

/// What a session's sandbox is made of, from its environment's config.
fn sandbox_spec(session_id: &str, environment: &Environment) -> SandboxSpec {
    let cloud = match &environment.config {
        EnvironmentConfig::Cloud(cloud) => Some(cloud),
        _ => None,
    };
    let strings = |manager: &str| -> Vec<String> {
        cloud
            .and_then(|c| c.packages.list(manager))
            .cloned()
            .unwrap_or_default()
    };
    for manager in ["apt", "cargo", "gem", "go"] {
        if !strings(manager).is_empty() {
            tracing::warn!(
                environment = %environment.id,
                "the local runtime installs only pip and npm packages; {manager} packages are skipped"
            );
        }
    }
    let network = match cloud.map(|c| &c.networking) {
        Some(Networking::Limited(limited)) => Network::Limited {
            allowed_hosts: limited.allowed_hosts.clone(),
            allow_package_managers: limited.allow_package_managers,
        },
        _ => Network::Unrestricted,
    };
    SandboxSpec {
        session_id: session_id.to_owned(),
        environment_id: environment.id.clone(),
        packages: Packages {
            pip: strings("pip"),
            npm: strings("npm"),
        },
        environment_address: environment.metadata.get(META_ADDRESS).cloned(),
        network,
        session_address: None,
    }
}

/// Removes a session's sandbox.
pub(super) async fn remove_sandbox(slot: &Slot, sandboxes: &dyn SandboxProvider) {
    let sandbox = slot.sandbox.lock().await.take();
    let mut result = match sandbox {
        Some(sandbox) => sandbox.teardown().await,
        None => Ok(()),
    };
    if result.is_ok() {
        result = sandboxes.remove(&slot.id).await;
    }
    if let Err(e) = result {
        tracing::warn!(session = %slot.id, "cannot remove the session's workspace: {e}");
    }
}

/// The permission policy of a built-in tool the agent has enabled and the
/// engine runs.
pub(super) fn builtin_policy(tools: &[Tool], name: &str) -> Option<String> {
    if !tools::BUILTIN.contains(&name) {
        return None;
    }
    let toolset = tools.iter().find_map(|t| match t {
        Tool::AgentToolset(toolset) => Some(toolset),
        _ => None,
    })?;
    let config = toolset.configs.iter().find(|c| c.name == name)?;
    if !config.enabled {
        return None;
    }
    Some(
        config
            .permission_policy
            .name()
            .unwrap_or("always_ask")
            .to_owned(),
    )
}

pub(super) fn custom_tools(tools: &[Tool]) -> impl Iterator<Item = &CustomTool> {
    tools.iter().filter_map(|t| match t {
        Tool::Custom(custom) => Some(custom),
        _ => None,
    })
}

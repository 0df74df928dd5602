//! Agents: the API's rules on one agent body — name and model, the length
//! of the system prompt, the number of tools and MCP servers, built-in tool
//! names, MCP toolsets that name a declared server (and servers that some
//! toolset uses), custom tools.

use super::Fields;
use crate::api::limits::{
    MAX_CUSTOM_TOOL_NAME, MAX_MCP_SERVERS, MAX_MCP_SERVER_NAME, MAX_NAME, MAX_SYSTEM, MAX_TOOLS,
    TOOLSET_TOOLS,
};
use crate::manifest::diagnostic::Diagnostic;
use crate::manifest::spec::{AgentSpec, McpServerSpec, ModelSpec, ToolConfigSpec, ToolSpec};

pub(crate) fn check(spec: &AgentSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
    check_name_and_model(spec, fields, problems);
    check_counts(spec, fields, problems);
    let servers: Vec<&str> = spec
        .mcp_servers
        .iter()
        .map(|s| match s {
            McpServerSpec::Url { name, .. } => name.as_str(),
        })
        .collect();
    for (i, s) in servers.iter().enumerate() {
        if s.is_empty() || s.chars().count() > MAX_MCP_SERVER_NAME {
            problems.push(
                Diagnostic::at(
                    fields.at(&["mcp_servers", &i.to_string(), "name"], None),
                    format!("MCP server names are 1 to {MAX_MCP_SERVER_NAME} characters"),
                )
                .help("give the server a shorter name"),
            );
        }
        if servers[..i].contains(s) {
            problems.push(
                Diagnostic::at(
                    fields.at(&["mcp_servers", &i.to_string(), "name"], None),
                    format!("MCP server name `{s}` is used twice"),
                )
                .help("server names are unique within an agent; rename one"),
            );
        }
    }
    let used = check_tools(spec, &servers, fields, problems);
    for (i, s) in servers.iter().enumerate() {
        if !used.contains(s) {
            problems.push(Diagnostic::at(fields.at(&["mcp_servers", &i.to_string(), "name"], None), format!("MCP server `{s}` is not used by any `mcp_toolset` tool"))
                .help("add `{ type: mcp_toolset, mcp_server_name: ... }` to `tools`, or remove the server"));
        }
    }
}

fn check_name_and_model(spec: &AgentSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
    let name = spec.name.as_deref().unwrap_or_default();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        problems.push(
            Diagnostic::at(
                fields.at(&[], Some("name")),
                format!("agent names are 1 to {MAX_NAME} characters"),
            )
            .help(format!(
                "give the agent a `name` of at most {MAX_NAME} characters"
            )),
        );
    }
    let model = match &spec.model {
        ModelSpec::Id(id) => id.as_str(),
        ModelSpec::Config(c) => c.id.as_str(),
    };
    if model.trim().is_empty() {
        problems.push(
            Diagnostic::at(fields.at(&["model"], None), "`model` is empty")
                .help("name a model, e.g. `model: claude-sonnet-4-6`"),
        );
    }
    let system = spec.system.as_deref().map_or(0, |s| s.chars().count());
    if system > MAX_SYSTEM {
        problems.push(
            Diagnostic::at(
                fields.at(&["system"], None),
                format!(
                    "the system prompt is {system} characters; the API takes at most {MAX_SYSTEM}"
                ),
            )
            .help("shorten the system prompt, or check the template that builds it"),
        );
    }
}

fn check_counts(spec: &AgentSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
    if spec.tools.len() > MAX_TOOLS {
        problems.push(
            Diagnostic::at(
                fields.at(&["tools"], None),
                format!(
                    "{} tools; at most {MAX_TOOLS} are allowed",
                    spec.tools.len()
                ),
            )
            .help(format!(
                "the API allows at most {MAX_TOOLS} tools per agent; remove some"
            )),
        );
    }
    if spec.mcp_servers.len() > MAX_MCP_SERVERS {
        problems.push(
            Diagnostic::at(
                fields.at(&["mcp_servers"], None),
                format!("at most {MAX_MCP_SERVERS} MCP servers are allowed"),
            )
            .help(format!(
                "the API allows at most {MAX_MCP_SERVERS} MCP servers per agent; remove some"
            )),
        );
    }
}

/// Checks every tool; returns the MCP servers the toolsets use.
fn check_tools<'a>(
    spec: &'a AgentSpec,
    servers: &[&str],
    fields: &Fields,
    problems: &mut Vec<Diagnostic>,
) -> Vec<&'a str> {
    let mut used = Vec::new();
    let mut custom_names: Vec<&str> = Vec::new();
    for (i, tool) in spec.tools.iter().enumerate() {
        let index = i.to_string();
        match tool {
            ToolSpec::AgentToolset { configs, .. } => {
                check_toolset_configs(i, configs, fields, problems)
            }
            ToolSpec::McpToolset {
                mcp_server_name, ..
            } => {
                used.push(mcp_server_name.as_str());
                if !servers.contains(&mcp_server_name.as_str()) {
                    problems.push(Diagnostic::at(fields.at(&["tools", &index, "mcp_server_name"], None), format!("tools[{i}]: MCP server `{mcp_server_name}` is not declared in `mcp_servers`"))
                        .help("add `{ type: url, name: ..., url: ... }` to `mcp_servers`"));
                }
            }
            ToolSpec::Custom {
                name, description, ..
            } => {
                check_custom_tool(i, name, description, &custom_names, fields, problems);
                custom_names.push(name);
            }
        }
    }
    used
}

fn check_toolset_configs(
    i: usize,
    configs: &[ToolConfigSpec],
    fields: &Fields,
    problems: &mut Vec<Diagnostic>,
) {
    for (j, c) in configs.iter().enumerate() {
        if !TOOLSET_TOOLS.contains(&c.name.as_str()) {
            let path = ["tools", &i.to_string(), "configs", &j.to_string(), "name"];
            problems.push(
                Diagnostic::at(
                    fields.at(&path, None),
                    format!("tools[{i}]: `{}` is not a built-in tool", c.name),
                )
                .help(format!("built-in tools: {}", TOOLSET_TOOLS.join(", "))),
            );
        }
    }
}

fn check_custom_tool(
    i: usize,
    name: &str,
    description: &str,
    earlier: &[&str],
    fields: &Fields,
    problems: &mut Vec<Diagnostic>,
) {
    let index = i.to_string();
    let name_span = fields.at(&["tools", &index, "name"], None);
    let ok = !name.is_empty()
        && name.len() <= MAX_CUSTOM_TOOL_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        problems.push(
            Diagnostic::at(
                name_span,
                format!("tools[{i}]: custom tool name `{name}` is invalid"),
            )
            .help(format!(
                "1 to {MAX_CUSTOM_TOOL_NAME} characters: letters, digits, `_` and `-`"
            )),
        );
    }
    if earlier.contains(&name) {
        problems.push(
            Diagnostic::at(
                name_span,
                format!("tools[{i}]: custom tool `{name}` is declared twice"),
            )
            .help("custom tool names are unique within an agent; rename one"),
        );
    }
    if description.trim().is_empty() {
        problems.push(
            Diagnostic::at(
                fields.at(&["tools", &index], None),
                format!("tools[{i}]: custom tool `{name}` needs a description"),
            )
            .help("the description tells the model when to use the tool"),
        );
    }
}

#[cfg(test)]
mod tests;

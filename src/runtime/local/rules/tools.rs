//! The API's rules for an agent's `tools` and the `mcp_servers` its MCP
//! toolsets use: every tool resolved to its full response shape (the
//! toolset gets a config for each of its tools, defaults filled in).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value};

use super::super::body::{
    array, as_object, boolean, bounded_str, check_keys, field, invalid, nonempty_str, one_of,
    one_of_as, optional_str, positive_int, present, required, string, string_list,
};
use crate::api::limits::{
    MAX_FILTER_TOOLS, MAX_MCP_SERVERS, MAX_MCP_SERVER_NAME, MAX_TOOLS, MAX_TOOL_NAME,
    MAX_WEB_DOMAINS, TOOLSET, TOOLSET_TOOLS,
};
use crate::api::tool::{
    AgentToolConfig, AgentToolset, CustomTool, McpToolConfig, McpToolset, ToolFilter,
    ToolReference, ToolsetDefaultConfig, UrlSources, UserInputSource, UserLocation,
};
use crate::api::{McpServer, PermissionPolicy, Result, Tool};

pub fn resolve_mcp_servers(value: &Value, path: &str) -> Result<Vec<McpServer>> {
    let items = array(value, path)?;
    if items.len() > MAX_MCP_SERVERS {
        return Err(invalid(format!(
            "`{path}`: at most {MAX_MCP_SERVERS} MCP servers are allowed"
        )));
    }
    let mut names = HashSet::new();
    let mut servers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let map = as_object(item, &p)?;
        check_keys(map, &p, &["name", "type", "url"])?;
        let name = bounded_str(
            required(map, &p, "name")?,
            &field(&p, "name"),
            MAX_MCP_SERVER_NAME,
        )?;
        one_of(required(map, &p, "type")?, &field(&p, "type"), &["url"])?;
        let url = nonempty_str(required(map, &p, "url")?, &field(&p, "url"))?;
        if !names.insert(name) {
            return Err(invalid(format!(
                "`{p}.name`: duplicate MCP server name `{name}`"
            )));
        }
        servers.push(McpServer::Url {
            name: name.to_owned(),
            url: url.to_owned(),
        });
    }
    Ok(servers)
}

/// The API rejects toolsets naming unknown servers and servers no toolset uses.
pub fn check_mcp_references(servers: &[McpServer], tools: &[Tool], path: &str) -> Result<()> {
    let server_names: BTreeSet<&str> = servers.iter().filter_map(McpServer::name).collect();
    let toolset_names: BTreeSet<&str> = tools
        .iter()
        .filter_map(|t| match t {
            Tool::McpToolset(m) => Some(m.mcp_server_name.as_str()),
            _ => None,
        })
        .collect();
    if let Some(name) = toolset_names.difference(&server_names).next() {
        return Err(invalid(format!(
            "`{}`: mcp_toolset references unknown MCP server `{name}`",
            field(path, "tools")
        )));
    }
    if let Some(name) = server_names.difference(&toolset_names).next() {
        return Err(invalid(format!(
            "`{}`: MCP server `{name}` is not referenced by any mcp_toolset in `tools`",
            field(path, "mcp_servers")
        )));
    }
    Ok(())
}

pub fn resolve_tools(value: &Value, path: &str) -> Result<Vec<Tool>> {
    let items = array(value, path)?;
    if items.len() > MAX_TOOLS {
        return Err(invalid(format!(
            "`{path}`: at most {MAX_TOOLS} tools are allowed"
        )));
    }
    // web_fetch's url_sources may name the custom tools of the same array.
    let custom_names: HashSet<&str> = items
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("custom"))
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    let mut toolset_seen = false;
    let mut mcp_seen = HashSet::new();
    let mut custom_seen = HashSet::new();
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let map = as_object(item, &p)?;
        let type_path = field(&p, "type");
        let tool = match string(required(map, &p, "type")?, &type_path)? {
            TOOLSET => {
                if std::mem::replace(&mut toolset_seen, true) {
                    return Err(invalid(format!(
                        "`{type_path}`: agent_toolset_20260401 may appear only once"
                    )));
                }
                Tool::AgentToolset(resolve_agent_toolset(map, &p, &custom_names)?)
            }
            "mcp_toolset" => {
                let toolset = resolve_mcp_toolset(map, &p)?;
                if !mcp_seen.insert(toolset.mcp_server_name.clone()) {
                    return Err(invalid(format!(
                        "`{p}.mcp_server_name`: MCP server already has a toolset"
                    )));
                }
                Tool::McpToolset(toolset)
            }
            "custom" => {
                let tool = resolve_custom_tool(map, &p)?;
                if !custom_seen.insert(tool.name.clone()) {
                    return Err(invalid(format!("`{p}.name`: duplicate custom tool name")));
                }
                Tool::Custom(tool)
            }
            other => {
                return Err(invalid(format!(
                    "`{type_path}`: unknown tool type `{other}`"
                )))
            }
        };
        tools.push(tool);
    }
    Ok(tools)
}

/// A toolset's `default_config`, resolved.
fn resolve_default_config(
    map: &Map<String, Value>,
    path: &str,
    default_policy: PermissionPolicy,
) -> Result<ToolsetDefaultConfig> {
    let Some(value) = present(map, "default_config") else {
        return Ok(ToolsetDefaultConfig {
            enabled: true,
            permission_policy: default_policy,
        });
    };
    let p = field(path, "default_config");
    let config = as_object(value, &p)?;
    check_keys(config, &p, &["enabled", "permission_policy"])?;
    let enabled = present(config, "enabled")
        .map(|v| boolean(v, &field(&p, "enabled")))
        .transpose()?
        .unwrap_or(true);
    let permission_policy = match present(config, "permission_policy") {
        None => default_policy,
        Some(v) => permission_policy(v, &field(&p, "permission_policy"))?,
    };
    Ok(ToolsetDefaultConfig {
        enabled,
        permission_policy,
    })
}

fn permission_policy(value: &Value, path: &str) -> Result<PermissionPolicy> {
    let map = as_object(value, path)?;
    check_keys(map, path, &["type"])?;
    one_of_as(
        required(map, path, "type")?,
        &field(path, "type"),
        &PermissionPolicy::NAMES,
        PermissionPolicy::from_name,
    )
}

/// A tool config's `enabled` and `permission_policy`, falling back to the
/// toolset's resolved default.
fn resolve_tool_switches(
    map: Option<&Map<String, Value>>,
    path: &str,
    default: &ToolsetDefaultConfig,
) -> Result<ToolsetDefaultConfig> {
    let Some(map) = map else {
        return Ok(default.clone());
    };
    let enabled = present(map, "enabled")
        .map(|v| boolean(v, &field(path, "enabled")))
        .transpose()?
        .unwrap_or(default.enabled);
    let permission_policy = match present(map, "permission_policy") {
        None => default.permission_policy.clone(),
        Some(v) => permission_policy(v, &field(path, "permission_policy"))?,
    };
    Ok(ToolsetDefaultConfig {
        enabled,
        permission_policy,
    })
}

fn resolve_agent_toolset(
    map: &Map<String, Value>,
    path: &str,
    custom_names: &HashSet<&str>,
) -> Result<AgentToolset> {
    check_keys(map, path, &["type", "configs", "default_config"])?;
    let default = resolve_default_config(map, path, PermissionPolicy::AlwaysAllow)?;
    let mut overrides: BTreeMap<&str, (String, &Map<String, Value>)> = BTreeMap::new();
    if let Some(configs) = present(map, "configs") {
        for (i, item) in array(configs, &field(path, "configs"))?.iter().enumerate() {
            let p = format!("{path}.configs[{i}]");
            let config = as_object(item, &p)?;
            let name = one_of(
                required(config, &p, "name")?,
                &field(&p, "name"),
                &TOOLSET_TOOLS,
            )?;
            if let Some(kind) = present(config, "type") {
                if string(kind, &field(&p, "type"))? != name {
                    return Err(invalid(format!("`{p}.type`: must equal `name` (`{name}`)")));
                }
            }
            let mut allowed = vec!["name", "type", "enabled", "permission_policy"];
            match name {
                "web_fetch" => allowed.extend([
                    "url_sources",
                    "allowed_domains",
                    "blocked_domains",
                    "max_content_tokens",
                ]),
                "web_search" => {
                    allowed.extend(["allowed_domains", "blocked_domains", "user_location"])
                }
                _ => {}
            }
            check_keys(config, &p, &allowed)?;
            if overrides.insert(name, (p.clone(), config)).is_some() {
                return Err(invalid(format!("`{p}.name`: `{name}` is configured twice")));
            }
        }
    }
    let mut configs = Vec::with_capacity(TOOLSET_TOOLS.len());
    for name in TOOLSET_TOOLS {
        let given = overrides.get(name);
        let p = given.map_or(path, |(p, _)| p.as_str());
        let switches = resolve_tool_switches(given.map(|(_, m)| *m), p, &default)?;
        let mut config = AgentToolConfig {
            name: name.to_owned(),
            kind: name.to_owned(),
            enabled: switches.enabled,
            permission_policy: switches.permission_policy,
            allowed_domains: None,
            blocked_domains: None,
            max_content_tokens: None,
            url_sources: None,
            user_location: None,
        };
        if let Some((p, given)) = given {
            resolve_web_options(name, given, p, custom_names, &mut config)?;
        }
        configs.push(config);
    }
    Ok(AgentToolset {
        configs,
        default_config: default,
    })
}

/// The extra options of `web_fetch` and `web_search`; nulls are dropped.
fn resolve_web_options(
    name: &str,
    given: &Map<String, Value>,
    path: &str,
    custom_names: &HashSet<&str>,
    out: &mut AgentToolConfig,
) -> Result<()> {
    let mut domain_lists = 0;
    for key in ["allowed_domains", "blocked_domains"] {
        let Some(value) = present(given, key) else {
            continue;
        };
        let p = field(path, key);
        let domains = string_list(value, &p)?;
        if domains.is_empty() {
            return Err(invalid(format!(
                "`{p}`: must not be empty; omit it instead"
            )));
        }
        if domains.len() > MAX_WEB_DOMAINS {
            return Err(invalid(format!(
                "`{p}`: at most {MAX_WEB_DOMAINS} domains are allowed"
            )));
        }
        domain_lists += 1;
        if key == "allowed_domains" {
            out.allowed_domains = Some(domains);
        } else {
            out.blocked_domains = Some(domains);
        }
    }
    if domain_lists > 1 {
        return Err(invalid(format!(
            "`{path}`: `allowed_domains` and `blocked_domains` cannot be combined"
        )));
    }
    if name == "web_fetch" {
        if let Some(value) = present(given, "max_content_tokens") {
            out.max_content_tokens = Some(positive_int(value, &field(path, "max_content_tokens"))?);
        }
        if let Some(value) = present(given, "url_sources") {
            out.url_sources = Some(resolve_url_sources(
                value,
                &field(path, "url_sources"),
                custom_names,
            )?);
        }
    }
    if name == "web_search" {
        if let Some(value) = present(given, "user_location") {
            out.user_location = Some(resolve_user_location(value, &field(path, "user_location"))?);
        }
    }
    Ok(())
}

fn resolve_user_location(value: &Value, path: &str) -> Result<UserLocation> {
    let location = as_object(value, path)?;
    check_keys(
        location,
        path,
        &["type", "city", "country", "region", "timezone"],
    )?;
    one_of(
        required(location, path, "type")?,
        &field(path, "type"),
        &["approximate"],
    )?;
    Ok(UserLocation {
        city: optional_str(location, path, "city")?,
        country: optional_str(location, path, "country")?,
        region: optional_str(location, path, "region")?,
        timezone: optional_str(location, path, "timezone")?,
    })
}

fn resolve_url_sources(
    value: &Value,
    path: &str,
    custom_names: &HashSet<&str>,
) -> Result<UrlSources> {
    let map = as_object(value, path)?;
    check_keys(
        map,
        path,
        &["client_tool_results", "server_tool_results", "user_input"],
    )?;
    let mut out = UrlSources::default();
    if let Some(v) = present(map, "client_tool_results") {
        out.client_tool_results = Some(tool_filter(
            v,
            &field(path, "client_tool_results"),
            &|name| custom_names.contains(name),
        )?);
    }
    if let Some(v) = present(map, "server_tool_results") {
        out.server_tool_results = Some(tool_filter(
            v,
            &field(path, "server_tool_results"),
            &|name| matches!(name, "web_search" | "web_fetch"),
        )?);
    }
    if let Some(v) = present(map, "user_input") {
        let p = field(path, "user_input");
        let kind = match v {
            Value::String(_) => one_of(v, &p, &["all", "none"])?,
            _ => {
                let m = as_object(v, &p)?;
                check_keys(m, &p, &["type"])?;
                one_of(
                    required(m, &p, "type")?,
                    &field(&p, "type"),
                    &["all", "none"],
                )?
            }
        };
        out.user_input = Some(if kind == "all" {
            UserInputSource::All
        } else {
            UserInputSource::None
        });
    }
    let all_none = out.client_tool_results == Some(ToolFilter::None)
        && out.server_tool_results == Some(ToolFilter::None)
        && out.user_input == Some(UserInputSource::None);
    if all_none {
        return Err(invalid(format!(
            "`{path}`: cannot set every source to `none`"
        )));
    }
    Ok(out)
}

/// `"all"`, `"none"` or `{type, tools?}`; `known` says which tool names may be
/// referenced.
fn tool_filter(value: &Value, path: &str, known: &dyn Fn(&str) -> bool) -> Result<ToolFilter> {
    const KINDS: [&str; 4] = ["all", "none", "only", "except"];
    let all_or_none = |kind: &str| {
        if kind == "all" {
            ToolFilter::All
        } else {
            ToolFilter::None
        }
    };
    if value.is_string() {
        let kind = one_of(value, path, &["all", "none"])?;
        return Ok(all_or_none(kind));
    }
    let map = as_object(value, path)?;
    let kind = one_of(required(map, path, "type")?, &field(path, "type"), &KINDS)?;
    if matches!(kind, "all" | "none") {
        check_keys(map, path, &["type"])?;
        return Ok(all_or_none(kind));
    }
    check_keys(map, path, &["type", "tools"])?;
    let p = field(path, "tools");
    let items = array(required(map, path, "tools")?, &p)?;
    if items.is_empty() || items.len() > MAX_FILTER_TOOLS {
        return Err(invalid(format!(
            "`{p}`: expected 1 to {MAX_FILTER_TOOLS} entries"
        )));
    }
    let mut names = HashSet::new();
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{p}[{i}]");
        let reference = as_object(item, &ip)?;
        check_keys(reference, &ip, &["name", "type"])?;
        let name = nonempty_str(required(reference, &ip, "name")?, &field(&ip, "name"))?;
        one_of(
            required(reference, &ip, "type")?,
            &field(&ip, "type"),
            &["tool_reference"],
        )?;
        if !names.insert(name) {
            return Err(invalid(format!("`{ip}.name`: `{name}` is listed twice")));
        }
        if !known(name) {
            return Err(invalid(format!(
                "`{ip}.name`: `{name}` cannot be referenced here"
            )));
        }
        tools.push(ToolReference {
            name: name.to_owned(),
        });
    }
    Ok(if kind == "only" {
        ToolFilter::Only { tools }
    } else {
        ToolFilter::Except { tools }
    })
}

fn resolve_mcp_toolset(map: &Map<String, Value>, path: &str) -> Result<McpToolset> {
    check_keys(
        map,
        path,
        &["type", "mcp_server_name", "configs", "default_config"],
    )?;
    let server = bounded_str(
        required(map, path, "mcp_server_name")?,
        &field(path, "mcp_server_name"),
        MAX_MCP_SERVER_NAME,
    )?;
    let default = resolve_default_config(map, path, PermissionPolicy::AlwaysAsk)?;
    let mut names = HashSet::new();
    let mut configs = Vec::new();
    if let Some(given) = present(map, "configs") {
        for (i, item) in array(given, &field(path, "configs"))?.iter().enumerate() {
            let p = format!("{path}.configs[{i}]");
            let config = as_object(item, &p)?;
            check_keys(config, &p, &["name", "enabled", "permission_policy"])?;
            let name = bounded_str(
                required(config, &p, "name")?,
                &field(&p, "name"),
                MAX_TOOL_NAME,
            )?;
            if !names.insert(name) {
                return Err(invalid(format!("`{p}.name`: `{name}` is configured twice")));
            }
            let switches = resolve_tool_switches(Some(config), &p, &default)?;
            configs.push(McpToolConfig {
                name: name.to_owned(),
                enabled: switches.enabled,
                permission_policy: switches.permission_policy,
            });
        }
    }
    Ok(McpToolset {
        mcp_server_name: server.to_owned(),
        configs,
        default_config: default,
    })
}

fn resolve_custom_tool(map: &Map<String, Value>, path: &str) -> Result<CustomTool> {
    check_keys(map, path, &["type", "name", "description", "input_schema"])?;
    let name_path = field(path, "name");
    let name = bounded_str(required(map, path, "name")?, &name_path, MAX_TOOL_NAME)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(format!(
            "`{name_path}`: may contain only letters, digits, underscores and hyphens"
        )));
    }
    let description = string(
        required(map, path, "description")?,
        &field(path, "description"),
    )?;
    let schema_path = field(path, "input_schema");
    let mut schema = as_object(required(map, path, "input_schema")?, &schema_path)?.clone();
    one_of(
        required(&schema, &schema_path, "type")?,
        &field(&schema_path, "type"),
        &["object"],
    )?;
    if let Some(properties) = present(&schema, "properties") {
        as_object(properties, &field(&schema_path, "properties"))?;
    }
    if let Some(required_names) = present(&schema, "required") {
        string_list(required_names, &field(&schema_path, "required"))?;
    }
    schema.retain(|key, v| !(v.is_null() && matches!(key.as_str(), "properties" | "required")));
    Ok(CustomTool {
        name: name.to_owned(),
        description: description.to_owned(),
        input_schema: schema,
    })
}

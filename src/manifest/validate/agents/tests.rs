//! The rules on one agent body, each refusal with its position and help.

use crate::api::limits::{
    MAX_CUSTOM_TOOL_NAME, MAX_MCP_SERVERS, MAX_MCP_SERVER_NAME, MAX_NAME, MAX_SYSTEM, MAX_TOOLS,
};
use crate::manifest::test_support::{at, help, load, refusal, refusals};

fn agent(body: &str) -> String {
    format!("version: 1\nagents:\n  a:\n{body}")
}

const MODEL: &str = "    model: m\n";

#[test]
fn a_full_agent_loads_with_its_body() {
    let text = agent(
        "    model: { id: claude-sonnet-4-6, speed: fast }\n    system: s\n\
         \x20   tools:\n\
         \x20     - type: agent_toolset_20260401\n\
         \x20       configs: [{ name: bash, permission_policy: { type: always_ask } }]\n\
         \x20     - { type: mcp_toolset, mcp_server_name: docs }\n\
         \x20     - { type: custom, name: lookup, description: Finds, input_schema: { type: object } }\n\
         \x20   mcp_servers: [{ type: url, name: docs, url: \"https://mcp.example.com\" }]\n",
    );
    let m = load(&[("a.yaml", &text)]).unwrap();
    let body = &m.resources[0].body;
    assert_eq!(body["name"], "a");
    assert_eq!(body["model"]["speed"], "fast");
    assert_eq!(body["tools"].as_array().unwrap().len(), 3);
    assert!(body.get("provider").is_none() && body.get("depends_on").is_none());
}

#[test]
fn names_and_models_are_bounded() {
    let long = "n".repeat(MAX_NAME + 1);
    let d = refusal(&agent(&format!("{MODEL}    name: {long}\n")));
    assert_eq!(d.message, "agent names are 1 to 256 characters");
    assert_eq!(at(&d), (5, 5));
    assert_eq!(
        help(&d),
        "give the agent a `name` of at most 256 characters"
    );
    let d = refusal(&agent("    model: \" \"\n"));
    assert_eq!(d.message, "`model` is empty");
    assert_eq!(at(&d), (4, 12));
}

#[test]
fn a_system_prompt_past_the_api_limit_is_refused_at_the_field() {
    // Built by a template, as a runaway one would.
    let text = agent(&format!(
        "{MODEL}    system: \"{{{{ 'x' * {} }}}}\"\n",
        MAX_SYSTEM + 1
    ));
    let d = refusal(&text);
    assert_eq!(
        d.message,
        "the system prompt is 100001 characters; the API takes at most 100000"
    );
    assert_eq!(at(&d), (5, 13));
    assert!(help(&d).starts_with("shorten the system prompt"));
    let text = agent(&format!(
        "{MODEL}    system: \"{{{{ 'x' * {MAX_SYSTEM} }}}}\"\n"
    ));
    assert!(load(&[("a.yaml", &text)]).is_ok());
}

#[test]
fn mcp_server_names_are_bounded() {
    let long = "s".repeat(MAX_MCP_SERVER_NAME + 1);
    let d = refusal(&agent(&format!(
        "{MODEL}    mcp_servers: [{{ type: url, name: {long}, url: \"https://x\" }}]\n\
         \x20   tools: [{{ type: mcp_toolset, mcp_server_name: {long} }}]\n"
    )));
    assert_eq!(d.message, "MCP server names are 1 to 255 characters");
    assert_eq!(at(&d), (5, 38));
}

#[test]
fn too_many_tools_and_servers_are_refused() {
    let tools = "{ type: agent_toolset_20260401 }, ".repeat(MAX_TOOLS + 1);
    let d = refusal(&agent(&format!("{MODEL}    tools: [{tools}]\n")));
    assert_eq!(d.message, "257 tools; at most 256 are allowed");
    assert_eq!(at(&d), (5, 12));
    assert_eq!(
        help(&d),
        "the API allows at most 256 tools per agent; remove some"
    );

    let servers: String = (0..=MAX_MCP_SERVERS)
        .map(|i| format!("{{ type: url, name: s{i}, url: \"https://x\" }}, "))
        .collect();
    let toolsets: String = (0..=MAX_MCP_SERVERS)
        .map(|i| format!("{{ type: mcp_toolset, mcp_server_name: s{i} }}, "))
        .collect();
    let d = refusal(&agent(&format!(
        "{MODEL}    mcp_servers: [{servers}]\n    tools: [{toolsets}]\n"
    )));
    assert_eq!(d.message, "at most 20 MCP servers are allowed");
    assert_eq!(
        help(&d),
        "the API allows at most 20 MCP servers per agent; remove some"
    );
}

#[test]
fn mcp_toolsets_and_servers_must_match() {
    let d = refusals(&[(
        "a.yaml",
        &agent(&format!(
            "{MODEL}    mcp_servers:\n      - {{ type: url, name: docs, url: \"https://x\" }}\n\
             \x20     - {{ type: url, name: docs, url: \"https://y\" }}\n\
             \x20   tools: [{{ type: mcp_toolset, mcp_server_name: wiki }}]\n"
        )),
    )]);
    let found: Vec<(&str, (usize, usize))> =
        d.iter().map(|d| (d.message.as_str(), at(d))).collect();
    assert_eq!(
        found,
        [
            ("MCP server name `docs` is used twice", (7, 28)),
            (
                "tools[0]: MCP server `wiki` is not declared in `mcp_servers`",
                (8, 51)
            ),
            (
                "MCP server `docs` is not used by any `mcp_toolset` tool",
                (6, 28)
            ),
            (
                "MCP server `docs` is not used by any `mcp_toolset` tool",
                (7, 28)
            ),
        ]
    );
    assert!(help(&d[1]).contains("to `mcp_servers`"));
    assert!(help(&d[2]).contains("or remove the server"));
}

#[test]
fn toolset_configs_name_built_in_tools() {
    let d = refusal(&agent(&format!(
        "{MODEL}    tools:\n      - type: agent_toolset_20260401\n        configs: [{{ name: bsh }}]\n"
    )));
    assert_eq!(d.message, "tools[0]: `bsh` is not a built-in tool");
    assert_eq!(at(&d), (7, 27));
    assert_eq!(
        help(&d),
        "built-in tools: bash, edit, read, write, glob, grep, web_fetch, web_search"
    );
}

#[test]
fn custom_tools_need_a_valid_unique_name_and_a_description() {
    let long = "t".repeat(MAX_CUSTOM_TOOL_NAME + 1);
    let d = refusals(&[(
        "a.yaml",
        &agent(&format!(
            "{MODEL}    tools:\n\
             \x20     - {{ type: custom, name: \"a b\", description: x, input_schema: {{}} }}\n\
             \x20     - {{ type: custom, name: {long}, description: x, input_schema: {{}} }}\n\
             \x20     - {{ type: custom, name: ok, description: x, input_schema: {{}} }}\n\
             \x20     - {{ type: custom, name: ok, description: \" \", input_schema: {{}} }}\n"
        )),
    )]);
    let found: Vec<(&str, (usize, usize))> =
        d.iter().map(|d| (d.message.as_str(), at(d))).collect();
    let long_message = format!("tools[1]: custom tool name `{long}` is invalid");
    assert_eq!(
        found,
        [
            ("tools[0]: custom tool name `a b` is invalid", (6, 31)),
            (long_message.as_str(), (7, 31)),
            ("tools[3]: custom tool `ok` is declared twice", (9, 31)),
            ("tools[3]: custom tool `ok` needs a description", (9, 11)),
        ]
    );
    assert_eq!(
        help(&d[0]),
        "1 to 128 characters: letters, digits, `_` and `-`"
    );
    assert!(help(&d[2]).starts_with("custom tool names are unique"));
    assert!(help(&d[3]).starts_with("the description tells the model"));
}

//! The API's documented limits, stated once.

/// Metadata pairs per object.
pub const MAX_METADATA_PAIRS: usize = 16;
/// Characters of a metadata key.
pub const MAX_METADATA_KEY: usize = 64;
/// Characters of a metadata value.
pub const MAX_METADATA_VALUE: usize = 512;
/// Tools per agent.
pub const MAX_TOOLS: usize = 256;
/// MCP servers per agent.
pub const MAX_MCP_SERVERS: usize = 20;
/// Characters of a session title.
pub const MAX_TITLE: usize = 512;
/// Characters of an agent's or an environment's name.
pub const MAX_NAME: usize = 256;
/// Characters of a custom tool's name.
pub const MAX_CUSTOM_TOOL_NAME: usize = 128;
/// A list's `limit` when none is given.
pub const DEFAULT_PAGE_LIMIT: u32 = 20;
/// The largest `limit` a list takes.
pub const MAX_PAGE_LIMIT: u32 = 100;

/// The tools of `agent_toolset_20260401`, in the order the API lists them.
pub const TOOLSET_TOOLS: [&str; 8] = [
    "bash",
    "edit",
    "read",
    "write",
    "glob",
    "grep",
    "web_fetch",
    "web_search",
];

/// The toolset's type name.
pub const TOOLSET: &str = "agent_toolset_20260401";

/// Package managers of an environment's `packages`.
pub const PACKAGE_MANAGERS: [&str; 6] = ["apt", "cargo", "gem", "go", "npm", "pip"];

/// Characters of an MCP server's name (and of an `mcp_toolset`'s `mcp_server_name`).
pub const MAX_MCP_SERVER_NAME: usize = 255;
/// Characters of a custom tool's name, and of an MCP tool's in a toolset's `configs`.
pub const MAX_TOOL_NAME: usize = 128;
/// Characters of an `aws_role` execution identity's `role_arn`.
pub const MAX_ROLE_ARN: usize = 2048;
/// Agents of a multiagent team: a coordinator's `agents`, a team's `predefined_agents`.
pub const MAX_TEAM_AGENTS: usize = 20;
/// Domains of a web tool's `allowed_domains` or `blocked_domains`.
pub const MAX_WEB_DOMAINS: usize = 64;
/// Tools a `url_sources` filter names.
pub const MAX_FILTER_TOOLS: usize = 128;
/// Characters of a memory store resource's `instructions`.
pub const MAX_MEMORY_INSTRUCTIONS: usize = 4096;
/// Characters of an agent's system prompt (documented on the session
/// `agent_with_overrides` reference, which replaces it).
pub const MAX_SYSTEM: usize = 100_000;

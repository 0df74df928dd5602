//! `agentform.lock`: the agent versions an apply deployed, meant for git.

pub const LOCK_FILE: &str = "agentform.lock";

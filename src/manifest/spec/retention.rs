//! `retention:`: what `agentform run` keeps after each run, so that a state
//! used by every CI run stays small.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What `agentform run` keeps after each run. Unset: everything is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Runs whose transcripts are kept, newest first (at least 1); older
    /// transcripts are removed with their index entries and the archived
    /// sessions of the local runtime they recorded.
    #[schemars(range(min = 1))]
    pub transcripts: Option<u32>,
    /// Archived sessions of the local runtime kept, most recently archived
    /// first; older ones are deleted with their events and workspaces.
    pub archived_sessions: Option<u32>,
}

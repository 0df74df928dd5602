//! A session's `resources` as the API answers them: repositories, files and
//! memory stores mounted into its container.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `BetaManagedAgentsSessionResource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionResource {
    GithubRepository(GithubRepositoryResource),
    File(FileResource),
    MemoryStore(MemoryStoreResource),
    #[serde(untagged)]
    Other(Value),
}

/// `BetaManagedAgentsGitHubRepositoryResource`; the token it was created
/// with is never returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubRepositoryResource {
    pub id: String,
    pub created_at: String,
    pub mount_path: String,
    pub updated_at: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Checkout>,
}

/// What of a repository is checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Checkout {
    Branch {
        name: String,
    },
    Commit {
        sha: String,
    },
    #[serde(untagged)]
    Other(Value),
}

/// `BetaManagedAgentsFileResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileResource {
    pub id: String,
    pub created_at: String,
    pub file_id: String,
    pub mount_path: String,
    pub updated_at: String,
}

/// `BetaManagedAgentsMemoryStoreResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStoreResource {
    pub memory_store_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<MemoryAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `"read_write" | "read_only"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAccess {
    ReadWrite,
    ReadOnly,
    #[serde(untagged)]
    Other(String),
}

impl MemoryAccess {
    pub const NAMES: [&'static str; 2] = ["read_write", "read_only"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "read_write" => Some(MemoryAccess::ReadWrite),
            "read_only" => Some(MemoryAccess::ReadOnly),
            _ => None,
        }
    }
}

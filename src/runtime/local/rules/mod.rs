//! The Managed Agents API's rules, one file per object: what a request body
//! may hold, how each field resolves to its response shape (the typed
//! records of [`crate::api`]), and which changes are allowed. Each rule
//! exists once, with the API's error messages.
//!
//! Rules read and write records through `store.rs`; they do not know about
//! session events or workers.

pub mod agent;
pub mod environment;
pub mod metadata;
pub mod multiagent;
pub mod session;
pub mod tools;

#[cfg(test)]
mod agent_tests;
#[cfg(test)]
mod environment_tests;
#[cfg(test)]
mod multiagent_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

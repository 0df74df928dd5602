//! Operations: one function per command, composing the stages (manifest,
//! plan, apply, lock file, state, runtime, runner, serve) and returning data.
//!
//! Nothing here prints or asks: progress goes through the reporter traits
//! (`apply::Reporter`, `runner::RunReporter`), errors are each operation's
//! own enum, and the command line renders both. Where a command asks for
//! confirmation, its operation is split into the steps before and after.

pub mod apply;
pub mod destroy;
pub mod import;
pub mod models;
pub mod plan;
pub mod providers;
pub mod remote;
pub mod retention;
pub mod run;
pub mod serve;
pub mod state;
#[cfg(test)]
mod tests;
pub mod transcripts;
pub mod validate;

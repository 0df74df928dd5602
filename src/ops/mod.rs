//! Operations: one function per command, composing the stages (manifest,
//! plan, apply, state, runtime, runner). Nothing here prints; the command
//! line renders what these return.

pub mod import;
pub mod models;
pub mod providers;

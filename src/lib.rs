//! agentform: infrastructure-as-config for managed AI agents.
//!
//! The stages follow the data flow: [`manifest`] → [`graph`] → [`plan`] →
//! [`apply`] → [`state`], with providers behind the [`runtime`] protocol.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod api;
pub mod apply;
pub mod db;
pub mod digest;
pub mod engine;
pub mod graph;
pub mod http;
pub mod lockfile;
pub mod manifest;
pub mod model;
pub mod ops;
pub mod plan;
pub mod redact;
pub mod runner;
pub mod runtime;
pub mod sandbox;
pub mod serve;
pub mod state;
pub mod terminal;

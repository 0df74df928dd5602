//! Integration tests: one binary, one module per feature, each driving the real
//! `agentform` executable in its own temporary directory.

mod common;
mod fake_e2b;
mod fake_modal;
mod fake_model;

mod anthropic;
mod bad_manifests;
mod cli;
mod crash;
mod e2b;
mod e2b_inject;
mod e2b_remote;
mod examples;
mod lifecycle;
mod locking;
mod modal;
mod modal_mounts;
mod modal_remote;
mod postgres;
mod run;
mod sandbox;
mod schema;
mod secrets;
mod serve;
mod state;
mod tls_roots;
mod yaml_output;

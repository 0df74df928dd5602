//! Modal's messages and gRPC clients, generated at build time (`build.rs`)
//! from `proto/modal_proto/`: the part of the official `modal` 1.6.4 API
//! that agentform speaks. Generated code only; what a call means is the
//! other files' business.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `modal.client`: the control plane (`ModalClient`).
pub mod client {
    include!(concat!(env!("OUT_DIR"), "/modal.client.rs"));
}

/// `modal.task_command_router`: commands in a running sandbox
/// (`TaskCommandRouter`).
pub mod task_command_router {
    include!(concat!(env!("OUT_DIR"), "/modal.task_command_router.rs"));
}

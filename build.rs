//! Generates the Modal client's protobuf messages and gRPC stubs from the
//! checked-in `proto/modal_proto/*.proto` (written by
//! `scripts/modal-proto.sh` from the official `modal` wheel). protox parses
//! them, so no `protoc` is needed. Two outputs: messages and clients for the
//! library (`$OUT_DIR/modal.*.rs`), and servers only, over the library's
//! messages, for the fake Modal of the integration tests
//! (`$OUT_DIR/modal-servers/`).

use std::path::PathBuf;

const PROTOS: [&str; 2] = [
    "modal_proto/api.proto",
    "modal_proto/task_command_router.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        // An uploaded executable's pieces are slices of one buffer, not copies.
        .bytes(".modal.task_command_router.TaskExecStdinWriteRequest.data")
        .build_server(false)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(files.clone())?;
    let servers = PathBuf::from(std::env::var("OUT_DIR")?).join("modal-servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .emit_rerun_if_changed(false)
        .extern_path(
            ".modal.client",
            "::agentform::sandbox::modal::proto::client",
        )
        .extern_path(
            ".modal.task_command_router",
            "::agentform::sandbox::modal::proto::task_command_router",
        )
        .out_dir(servers)
        .compile_fds(files)?;
    Ok(())
}

mod cli;

use agentform::sandbox::local::{bridge, BRIDGE_COMMAND};

fn main() -> std::process::ExitCode {
    // The egress bridge inside a sandbox: not a command for people, so not in
    // the command line's help.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == BRIDGE_COMMAND) {
        return bridge::main(&args[2..]);
    }
    cli::main()
}

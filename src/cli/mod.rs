//! The `agentform` command line: argument parsing, output and exit codes.
//!
//! Each verb has its file: it parses its arguments, calls one operation of
//! `agentform::ops` and renders the result. Logic the library lacks does not
//! belong here. Errors are rendered once, in [`main`], and exit with 1.

mod apply;
mod args;
mod destroy;
mod output;
mod plan;
mod run;
mod serve;
mod state;
mod transcripts;
mod validate;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use agentform::manifest;

use apply::ApplyArgs;
use args::Global;
use destroy::DestroyArgs;
use output::Printer;
use plan::PlanArgs;
use run::RunArgs;
use serve::ServeArgs;
use state::StateCommand;
use transcripts::TranscriptsCommand;

#[derive(Parser, Debug)]
#[command(
    name = "agentform",
    version,
    about = "Infrastructure-as-config for managed AI agents",
    long_about = "Declare agents, environments and sessions in YAML; plan, apply and destroy them \
                  against a provider, with state kept in a local sled database.",
    after_help = "Examples:\n  agentform validate -f examples/quickstart.yaml\n  agentform plan -f examples/quickstart.yaml\n  agentform apply -f examples/quickstart.yaml --auto-approve\n  agentform destroy -f examples/quickstart.yaml --auto-approve"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the manifest: syntax, types, references, cycles
    #[command(
        after_help = "Examples:\n  agentform validate\n  agentform validate -f manifests/ --var model=claude-opus-4-6"
    )]
    Validate,
    /// Show what apply would change
    #[command(
        after_help = "Examples:\n  agentform plan\n  agentform plan --refresh --detailed-exitcode\n  agentform plan --json > plan.json\n  agentform plan --locked\n\nExit codes: 0 no changes (or changes without --detailed-exitcode), 1 error, 2 changes pending with --detailed-exitcode"
    )]
    Plan(PlanArgs),
    /// Create, update, archive and delete resources to match the manifest
    #[command(
        after_help = "Examples:\n  agentform apply\n  agentform apply --auto-approve --parallelism 16\n  agentform apply --target session.smoke"
    )]
    Apply(ApplyArgs),
    /// Delete sessions and environments and archive agents recorded in the state
    #[command(
        after_help = "Examples:\n  agentform destroy --auto-approve\n  agentform destroy --target environment.data"
    )]
    Destroy(DestroyArgs),
    /// Drive every session through its steps, record transcripts, check expectations
    #[command(
        after_help = "Examples:\n  agentform run\n  agentform run --session smoke --junit report.xml\n  agentform run --concurrency 8 --timeout 10m\n\nExit codes: 0 every expectation held, 1 an expectation failed or an error"
    )]
    Run(RunArgs),
    /// List, show, export and prune recorded transcripts
    #[command(subcommand)]
    Transcripts(TranscriptsCommand),
    /// Inspect and edit the state; list and restore its backups
    #[command(subcommand)]
    State(StateCommand),
    /// Print the JSON Schema of the manifest
    #[command(after_help = "Example:\n  agentform schema > schemas/agentform.schema.json")]
    Schema,
    /// Serve the local runtime over HTTP with the Managed Agents API's paths and shapes
    #[command(
        long_about = "Serve the local runtime over HTTP with the paths, bodies, events, SSE stream, errors \
                      and pagination of Anthropic's Managed Agents API, so the official SDKs and curl \
                      work against it: point them at the printed address (e.g. ANTHROPIC_BASE_URL). \
                      Model backends come from the manifest given with -f (`providers.local.models`). \
                      Stops on SIGINT or SIGTERM after the requests in flight, with the data flushed.",
        after_help = "Examples:\n  agentform serve\n  agentform serve --listen 127.0.0.1:0 --data /tmp/serve-data -f agents.yaml\n  AGENTFORM_SERVE_API_KEY=secret agentform serve --listen 0.0.0.0:8787 --allow-remote\n  agentform serve --latency-ms 200 --fail-rate 0.1 --fail-status 529 --drop-stream-after 5\n  curl -s http://127.0.0.1:8787/v1/agents -H 'content-type: application/json' -d '{\"name\":\"a\",\"model\":\"claude-sonnet-4-6\"}'"
    )]
    Serve(ServeArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  agentform completions bash > /etc/bash_completion.d/agentform\n  agentform completions zsh > \"${fpath[1]}/_agentform\""
    )]
    Completions { shell: clap_complete::Shell },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse_from(args::normalize_args());
    let printer = Printer::new(&cli.global);
    output::init_tracing(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &printer)) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<manifest::Diagnostics>() {
                Some(d) => printer.diagnostics(d),
                None => printer.error(&format!("{e:#}")),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, printer: &Printer) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Validate => validate::exec(g, printer),
        Command::Plan(args) => plan::exec(g, args, printer).await,
        Command::Apply(args) => apply::exec(g, args, printer).await,
        Command::Destroy(args) => destroy::exec(g, args, printer).await,
        Command::Run(args) => run::exec(g, args, printer).await,
        Command::Transcripts(cmd) => transcripts::exec(g, cmd, printer).await,
        Command::State(cmd) => state::exec(g, cmd, printer).await,
        Command::Serve(args) => serve::exec(g, args, printer).await,
        Command::Schema => {
            printer.out(&manifest::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "agentform", &mut buf);
            printer.out(String::from_utf8_lossy(&buf).trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! The `agentform` command line: argument parsing, output and exit codes.
//! Every operation is a library call; this module only presents it.

mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};

use agentform::apply::{self, Outcome};
use agentform::graph::{Address, Kind};
use agentform::lockfile::LockFile;
use agentform::manifest::{self, LoadOptions, Manifest};
use agentform::plan::{self, render, Action, Plan, PlanOptions};
use agentform::runtime::local::{LocalOptions, LocalRuntime};
use agentform::runtime::Providers;
use agentform::state::StateStore;

use output::{Printer, ProgressReporter};

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

#[derive(Args, Debug)]
struct Global {
    /// Manifest file or directory (every `*.yaml` in it); repeatable
    #[arg(short = 'f', long = "file", global = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    /// State directory
    #[arg(
        long,
        global = true,
        env = "AGENTFORM_STATE",
        default_value = "state",
        value_name = "DIR"
    )]
    state: PathBuf,
    /// Set a manifest variable (also `-var NAME=VALUE`); repeatable
    #[arg(long = "var", global = true, value_name = "NAME=VALUE", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// More logging (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// No colours (also when `NO_COLOR` is set or output is not a terminal)
    #[arg(long, global = true)]
    no_color: bool,
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
    /// List, show and export recorded transcripts
    #[command(subcommand)]
    Transcripts(TranscriptsCommand),
    /// Inspect and edit the state
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

#[derive(Args, Debug)]
struct Targeting {
    /// Limit to this resource (and what it needs); repeatable
    #[arg(long = "target", value_name = "ADDR", value_parser = parse_address)]
    targets: Vec<Address>,
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    targeting: Targeting,
    /// Read the live objects and report drift
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    refresh: bool,
    /// Print the plan as JSON
    #[arg(long)]
    json: bool,
    /// Exit 2 when changes are pending
    #[arg(long)]
    detailed_exitcode: bool,
    /// Fail when agentform.lock disagrees with what would be deployed
    #[arg(long)]
    locked: bool,
    /// Plan a destroy instead
    #[arg(long)]
    destroy: bool,
    /// Parallel refresh calls
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallelism: u16,
}

#[derive(Args, Debug)]
struct ApplyArgs {
    #[command(flatten)]
    targeting: Targeting,
    /// Skip the confirmation prompt
    #[arg(long)]
    auto_approve: bool,
    /// Changes in flight at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallelism: u16,
    /// Read the live objects first and repair drift
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true", value_name = "BOOL")]
    refresh: bool,
}

#[derive(Args, Debug)]
struct DestroyArgs {
    #[command(flatten)]
    targeting: Targeting,
    /// Skip the confirmation prompt
    #[arg(long)]
    auto_approve: bool,
    /// Changes in flight at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallelism: u16,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Only this session (name or address); repeatable
    #[arg(long = "session", value_name = "NAME")]
    sessions: Vec<String>,
    /// Sessions run at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// Write a JUnit XML report here
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Wall-clock limit per session, e.g. `10m` (overrides the manifest)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    timeout: Option<Duration>,
    /// Continue the recorded sessions instead of starting fresh ones
    #[arg(long = "continue")]
    continue_sessions: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (IP:PORT); port 0 picks a free one
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR", value_parser = parse_listen)]
    listen: std::net::SocketAddr,
    /// Where the served runtime keeps its database and workspaces
    #[arg(long, default_value = "serve-data", value_name = "DIR")]
    data: PathBuf,
    /// Require this key, as `x-api-key` or `Authorization: Bearer`
    #[arg(
        long,
        env = "AGENTFORM_SERVE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Allow a non-loopback --listen address (an API key is required then)
    #[arg(long)]
    allow_remote: bool,
    /// Fault injection: each runtime call answers this many milliseconds late
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Fault injection: this fraction of requests (0 to 1) fails with --fail-status
    #[arg(long, default_value_t = 0.0, value_name = "F", value_parser = parse_fraction)]
    fail_rate: f64,
    /// Statuses of injected failures, picked at random: 429 (with retry-after), 500, 529
    #[arg(long, default_value = "529", value_name = "STATUS,...", value_delimiter = ',', value_parser = parse_fail_status)]
    fail_status: Vec<u16>,
    /// Fault injection: this fraction of the injected 500s and 529s fail after the request took effect
    #[arg(long, default_value_t = 0.0, value_name = "F", value_parser = parse_fraction)]
    fail_after: f64,
    /// Fault injection: event streams close after N events
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    drop_stream_after: Option<u64>,
    /// Interval of the event streams' `ping` events, in milliseconds
    #[arg(long, hide = true, default_value_t = 15_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,
}

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    match s.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse::<u16>()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("`{port}` is not a port")),
        _ => Err(format!(
            "`{s}` is not an address; write IP:PORT, e.g. `127.0.0.1:8787` or `[::1]:8787`"
        )),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("`{s}` is not a fraction between 0 and 1"))
}

fn parse_fail_status(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|n| agentform::serve::FailStatus::from_status(*n).is_some())
        .ok_or_else(|| format!("`{s}`: expected 429, 500 or 529"))
}

#[derive(Subcommand, Debug)]
enum TranscriptsCommand {
    /// Every recorded transcript, oldest first
    #[command(after_help = "Example:\n  agentform transcripts list")]
    List,
    /// A transcript as a readable conversation
    #[command(
        after_help = "Examples:\n  agentform transcripts show latest/smoke\n  agentform transcripts show 20261125-101500-3f2a/session.smoke"
    )]
    Show {
        /// RUN/SESSION; RUN may be `latest`
        reference: String,
    },
    /// A transcript as Markdown or a self-contained HTML page
    #[command(
        after_help = "Examples:\n  agentform transcripts export latest/smoke --format html -o smoke.html\n  agentform transcripts export latest/smoke --format markdown"
    )]
    Export {
        reference: String,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ExportFormat,
        /// Write here instead of standard output
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    Markdown,
    Html,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    agentform::manifest::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration; write e.g. `500ms`, `30s`, `10m`, `1h`"))
}

#[derive(Subcommand, Debug)]
enum StateCommand {
    /// List the recorded resources
    List,
    /// Show one record as YAML
    #[command(after_help = "Example:\n  agentform state show agent.analyst")]
    Show {
        #[arg(value_parser = parse_address)]
        address: Address,
    },
    /// Forget a resource without touching the remote object
    #[command(after_help = "Example:\n  agentform state rm session.smoke")]
    Rm {
        #[arg(value_parser = parse_address)]
        address: Address,
    },
    /// Record an existing remote object as a declared resource
    #[command(after_help = "Example:\n  agentform state import agent.analyst agent_01AbC…")]
    Import {
        #[arg(value_parser = parse_address)]
        address: Address,
        remote_id: String,
    },
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    s.parse()
}

/// Terraform users type `-var k=v`; clap only knows `--var`.
fn normalize_args() -> Vec<std::ffi::OsString> {
    std::env::args_os()
        .map(|a| if a == "-var" { "--var".into() } else { a })
        .collect()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args());
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
        Command::Validate => {
            let m = load(g)?;
            printer.out(&format!(
                "The manifest is valid: {} resources ({} environments, {} agents, {} sessions) in {} file(s).",
                m.resources.len(),
                count(&m, Kind::Environment),
                count(&m, Kind::Agent),
                count(&m, Kind::Session),
                m.sources.files().count()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => plan_command(g, args, printer).await,
        Command::Apply(args) => apply_command(g, args, printer).await,
        Command::Destroy(args) => destroy_command(g, args, printer).await,
        Command::Run(args) => run_command(g, args, printer).await,
        Command::Transcripts(cmd) => transcripts_command(g, cmd, printer),
        Command::State(cmd) => state_command(g, cmd, printer).await,
        Command::Serve(args) => serve_command(g, args, printer).await,
        Command::Schema => {
            printer.out(&agentform::manifest::schema_json());
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

fn count(m: &Manifest, kind: Kind) -> usize {
    m.resources
        .iter()
        .filter(|r| r.address.kind == kind)
        .count()
}

fn manifest_files(g: &Global) -> Vec<PathBuf> {
    if g.files.is_empty() {
        vec![PathBuf::from("agentform.yaml")]
    } else {
        g.files.clone()
    }
}

fn load(g: &Global) -> Result<Manifest> {
    manifest::load(&LoadOptions {
        files: manifest_files(g),
        vars: g.vars.clone(),
    })
    .map_err(anyhow::Error::new)
}

fn open_state(g: &Global, command: &str) -> Result<StateStore> {
    Ok(StateStore::open(&g.state, command)?)
}

fn providers(state: &StateStore, manifest: Option<&Manifest>) -> Result<Providers> {
    Ok(agentform::ops::providers::providers(
        state,
        manifest,
        |name| std::env::var(name).ok(),
    )?)
}

async fn plan_command(g: &Global, args: PlanArgs, printer: &Printer) -> Result<ExitCode> {
    let m = load(g)?;
    warn_unconfined(&m, printer);
    let state = open_state(g, "plan")?;
    let providers = providers(&state, Some(&m))?;
    let options = PlanOptions {
        refresh: args.refresh,
        destroy: args.destroy,
        targets: args.targeting.targets.clone(),
        parallelism: args.parallelism as usize,
    };
    let plan = plan::plan(Some(&m), &state, &providers, &options).await?;
    if args.json {
        printer.out(&serde_json::to_string_pretty(&plan)?);
    } else {
        printer.out(render::render(&plan, printer.palette()).trim_end());
    }
    if args.locked {
        let lock = LockFile::read(&m.lock_path())?.ok_or_else(|| {
            anyhow!(
                "--locked: `{}` does not exist; run `agentform apply` and commit the lock file",
                m.lock_path().display()
            )
        })?;
        let problems = lock.disagreements(&m, &plan, &state.list()?);
        if !problems.is_empty() {
            bail!(
                "--locked: the deploy would differ from `{}`:\n  {}\nhint: run `agentform apply` and commit the updated lock file",
                m.lock_path().display(),
                problems.join("\n  ")
            );
        }
    }
    if args.detailed_exitcode && plan.has_changes() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn warn_unconfined(m: &Manifest, printer: &Printer) {
    if let Some(warning) = agentform::ops::providers::unconfined_warning(m) {
        printer.warn(warning);
    }
}

fn confirm(printer: &Printer, auto_approve: bool, verb: &str) -> Result<bool> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {verb} without confirmation: standard input is not a terminal\nhint: review the plan above and pass `--auto-approve`");
    }
    printer.prompt(&format!("Do you want to {verb}? Only `yes` is accepted: "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

async fn execute_plan(
    plan: &Plan,
    manifest: Option<Manifest>,
    state: StateStore,
    providers: Providers,
    parallelism: u16,
    printer: &Printer,
) -> Result<(apply::ApplyReport, Arc<StateStore>, Option<Arc<Manifest>>)> {
    let total = plan.pending().count();
    let reporter = Arc::new(ProgressReporter::new(printer, total));
    let state = Arc::new(state);
    let manifest = manifest.map(Arc::new);
    let report = apply::apply(
        plan,
        apply::Context {
            manifest: manifest.clone(),
            state: state.clone(),
            providers,
            parallelism: parallelism as usize,
            reporter: reporter.clone(),
        },
    )
    .await;
    reporter.finish();
    Ok((report, state, manifest))
}

fn summarize(report: &apply::ApplyReport, printer: &Printer, verb: &str) -> ExitCode {
    let done = |a| report.count(a);
    let summary = format!(
        "{} added, {} changed, {} replaced, {} archived, {} destroyed",
        done(Action::Create),
        done(Action::Update),
        done(Action::Replace),
        done(Action::Archive),
        done(Action::Delete)
    );
    if report.ok() {
        printer.out(&format!("{verb} complete! {summary}."));
        return ExitCode::SUCCESS;
    }
    let mut lines = vec![format!("{verb} failed. {summary}; these did not complete:")];
    for (addr, _, outcome) in report.failed() {
        match outcome {
            Outcome::Failed(e) => lines.push(format!("  {addr}: {e}")),
            Outcome::Skipped { because } => {
                lines.push(format!("  {addr}: skipped because {because} failed"))
            }
            Outcome::Done(_) => {}
        }
    }
    lines.push(
        "The state records everything that succeeded; fix the cause and run the command again."
            .into(),
    );
    printer.error(&lines.join("\n"));
    ExitCode::FAILURE
}

async fn apply_command(g: &Global, args: ApplyArgs, printer: &Printer) -> Result<ExitCode> {
    let m = load(g)?;
    warn_unconfined(&m, printer);
    let state = open_state(g, "apply")?;
    let providers = providers(&state, Some(&m))?;
    let options = PlanOptions {
        refresh: args.refresh,
        destroy: false,
        targets: args.targeting.targets.clone(),
        parallelism: args.parallelism as usize,
    };
    let plan = plan::plan(Some(&m), &state, &providers, &options).await?;
    printer.out(render::render(&plan, printer.palette()).trim_end());
    let lock_path = m.lock_path();
    if !plan.has_changes() {
        write_lock(&m, &state, printer)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !confirm(printer, args.auto_approve, "apply these changes")? {
        printer.out("Apply cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let (report, state, manifest) =
        execute_plan(&plan, Some(m), state, providers, args.parallelism, printer).await?;
    if let Some(m) = manifest.as_deref() {
        write_lock(m, &state, printer)
            .with_context(|| format!("writing `{}`", lock_path.display()))?;
    }
    Ok(summarize(&report, printer, "Apply"))
}

fn write_lock(m: &Manifest, state: &StateStore, printer: &Printer) -> Result<()> {
    let path = m.lock_path();
    let lock = LockFile::from_state(m, &state.list()?);
    if LockFile::read(&path).ok().flatten().as_ref() == Some(&lock) {
        return Ok(());
    }
    lock.write(&path)?;
    printer.info(&format!("Wrote {}", path.display()));
    Ok(())
}

async fn destroy_command(g: &Global, args: DestroyArgs, printer: &Printer) -> Result<ExitCode> {
    // The manifest supplies provider settings; destroy works from the state alone
    // when there is none.
    let m = match load(g) {
        Ok(m) => Some(m),
        Err(e) if manifest_missing(g) => {
            tracing::info!("destroying from the state alone: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let state = open_state(g, "destroy")?;
    let providers = providers(&state, m.as_ref())?;
    let options = PlanOptions {
        refresh: false,
        destroy: true,
        targets: args.targeting.targets.clone(),
        parallelism: args.parallelism as usize,
    };
    let plan = plan::plan(m.as_ref(), &state, &providers, &options).await?;
    printer.out(render::render(&plan, printer.palette()).trim_end());
    if !plan.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    if !confirm(printer, args.auto_approve, "destroy these resources")? {
        printer.out("Destroy cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let (report, state, manifest) =
        execute_plan(&plan, m, state, providers, args.parallelism, printer).await?;
    if let Some(m) = manifest.as_deref() {
        write_lock(m, &state, printer)?;
    }
    Ok(summarize(&report, printer, "Destroy"))
}

fn manifest_missing(g: &Global) -> bool {
    manifest_files(g).iter().all(|p| !p.exists())
}

async fn state_command(g: &Global, cmd: StateCommand, printer: &Printer) -> Result<ExitCode> {
    match cmd {
        StateCommand::List => {
            let state = open_state(g, "state list")?;
            for r in state.list()? {
                let version = r.version.map(|v| format!(" v{v}")).unwrap_or_default();
                printer.out(&format!(
                    "{}\t{}\t{}{version}",
                    r.address, r.provider, r.remote_id
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        StateCommand::Show { address } => {
            let state = open_state(g, "state show")?;
            let r = state.get(&address)?.ok_or_else(|| {
                anyhow!(
                    "`{address}` is not in the state\nhint: `agentform state list` shows what is"
                )
            })?;
            printer.out(serde_norway::to_string(&r)?.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        StateCommand::Rm { address } => {
            let state = open_state(g, "state rm")?;
            match state.remove(&address)? {
                Some(r) => {
                    printer.out(&format!(
                        "Removed {address} from the state; the remote object {} was not touched.",
                        r.remote_id
                    ));
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!(
                    "`{address}` is not in the state\nhint: `agentform state list` shows what is"
                ),
            }
        }
        StateCommand::Import { address, remote_id } => {
            let m = load(g)?;
            let state = open_state(g, "state import")?;
            let providers = providers(&state, Some(&m))?;
            let record =
                agentform::ops::import::import(&m, &state, &providers, &address, &remote_id)
                    .await?;
            printer.out(&format!(
                "Imported {address} as {}{}; `agentform plan` shows any difference from the manifest.",
                record.remote_id,
                record.version.map(|v| format!(" (version {v})")).unwrap_or_default()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_command(g: &Global, args: RunArgs, printer: &Printer) -> Result<ExitCode> {
    let m = Arc::new(load(g)?);
    warn_unconfined(&m, printer);
    let state = Arc::new(open_state(g, "run")?);
    let providers = providers(&state, Some(&m))?;
    let selected = if args.sessions.is_empty() {
        0
    } else {
        args.sessions.len()
    };
    let reporter = Arc::new(output::RunProgress::new(printer, selected));
    let options = agentform::runner::RunOptions {
        sessions: args.sessions.clone(),
        concurrency: args.concurrency as usize,
        timeout: args.timeout,
        continue_sessions: args.continue_sessions,
        transcripts: true,
    };
    let report = agentform::runner::run(
        m.clone(),
        state.clone(),
        providers,
        &options,
        reporter.clone(),
    )
    .await?;
    reporter.finish();
    for e in &report.write_errors {
        printer.error(e);
    }
    let passed = report.outcomes.iter().filter(|o| o.passed()).count();
    let failed = report.outcomes.len() - passed;
    for o in &report.outcomes {
        if o.passed() {
            printer.out(&format!(
                "ok     {} ({} steps, {:.1}s)",
                o.address,
                o.footer.steps.len(),
                o.footer.duration_ms as f64 / 1000.0
            ));
        } else {
            printer.out(&format!("FAILED {}", o.address));
            for (message, detail) in o.failure_messages() {
                printer.out(&format!("       {message}"));
                for line in detail.lines().filter(|l| !l.is_empty()).take(3) {
                    printer.out(&format!("         {line}"));
                }
            }
        }
    }
    if let Some(path) = &args.junit {
        let xml = agentform::runner::report::junit(
            &report.run_id,
            &report.outcomes,
            report.duration.as_secs_f64(),
        );
        std::fs::write(path, xml)
            .with_context(|| format!("writing the JUnit report `{}`", path.display()))?;
        printer.info(&format!("Wrote {}", path.display()));
    }
    printer.out(&format!(
        "run {}: {passed} passed, {failed} failed",
        report.run_id
    ));
    printer.info(&format!(
        "transcripts: agentform transcripts list; agentform transcripts show {}/SESSION",
        report.run_id
    ));
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve_command(g: &Global, args: ServeArgs, printer: &Printer) -> Result<ExitCode> {
    let api_key = args.api_key.clone();
    if api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!(
            "the API key is empty; set --api-key (or AGENTFORM_SERVE_API_KEY) to a non-empty value"
        );
    }
    if !args.listen.ip().is_loopback() {
        if !args.allow_remote {
            bail!(
                "refusing to listen on {}: it is reachable from other machines\nhint: pass --allow-remote (with an API key), or listen on 127.0.0.1",
                args.listen
            );
        }
        if api_key.is_none() {
            bail!(
                "refusing to listen on {} without an API key\nhint: set --api-key or AGENTFORM_SERVE_API_KEY",
                args.listen
            );
        }
    }
    let manifest = if g.files.is_empty() {
        None
    } else {
        Some(load(g)?)
    };
    let models: Arc<dyn agentform::runtime::local::ModelResolver> = match &manifest {
        None => Arc::new(agentform::runtime::local::NoModels),
        Some(m) => Arc::new(agentform::ops::models::ManifestModels::new(m)),
    };
    let store = StateStore::open(&args.data, "serve")?;
    let options = LocalOptions {
        latency: Duration::from_millis(args.latency_ms),
        sandboxes: Arc::new(agentform::ops::providers::local_sandboxes(
            args.data.join("workspaces"),
            manifest.as_ref(),
        )),
        models,
        drop_stream_after: args
            .drop_stream_after
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        ..Default::default()
    };
    let runtime = Arc::new(
        LocalRuntime::open(store.db(), options)
            .map_err(|e| anyhow!("cannot open the local runtime: {e}"))?,
    );
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let server = agentform::serve::Server::new(
        runtime.clone(),
        agentform::serve::Options {
            api_key,
            fail_rate: args.fail_rate,
            fail_statuses: args
                .fail_status
                .iter()
                .filter_map(|s| agentform::serve::FailStatus::from_status(*s))
                .collect(),
            fail_after: args.fail_after,
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            ..Default::default()
        },
    );
    printer.out(&format!("listening on http://{bound}"));
    let served = server.run(listener, shutdown).await;
    // Whatever happened, stop the sessions' workers and make everything durable.
    runtime.shutdown().await;
    let db = store.db().clone();
    let flushed = tokio::task::spawn_blocking(move || agentform::state::flush(&db)).await;
    served.context("serving")?;
    flushed
        .map_err(|e| anyhow!("flushing the data: {e}"))?
        .context("flushing the data")?;
    printer.info("stopped; the data is flushed");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM; the handlers are installed at once, so a
/// signal that arrives before the future is polled still counts.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn find_transcript(
    state: &StateStore,
    reference: &str,
) -> Result<agentform::state::TranscriptEntry> {
    let entries = state.transcripts()?;
    if entries.is_empty() {
        bail!("no transcripts recorded yet\nhint: `agentform run` records them");
    }
    let (run, session) = match reference.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (reference, None),
    };
    let run = if run == "latest" {
        entries
            .iter()
            .map(|e| e.run_id.clone())
            .max()
            .unwrap_or_default()
    } else {
        run.to_string()
    };
    let in_run: Vec<_> = entries.into_iter().filter(|e| e.run_id == run).collect();
    if in_run.is_empty() {
        bail!("no run `{run}`\nhint: `agentform transcripts list` shows the recorded runs");
    }
    match session {
        Some(s) => {
            let name = s.strip_prefix("session.").unwrap_or(s);
            in_run
                .into_iter()
                .find(|e| e.session.name == name)
                .ok_or_else(|| anyhow!("run `{run}` has no transcript of session `{name}`"))
        }
        None if in_run.len() == 1 => Ok(in_run.into_iter().next().expect("one entry")),
        None => bail!(
            "run `{run}` has {} sessions; name one: {}",
            in_run.len(),
            in_run
                .iter()
                .map(|e| format!("{run}/{}", e.session.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn transcripts_command(g: &Global, cmd: TranscriptsCommand, printer: &Printer) -> Result<ExitCode> {
    let state = open_state(g, "transcripts")?;
    match cmd {
        TranscriptsCommand::List => {
            for e in state.transcripts()? {
                printer.out(&format!(
                    "{}/{}\t{}\t{} events\t{:.1}s",
                    e.run_id,
                    e.session.name,
                    if e.passed { "passed" } else { "FAILED" },
                    e.events,
                    e.duration_ms as f64 / 1000.0
                ));
            }
        }
        TranscriptsCommand::Show { reference } => {
            let e = find_transcript(&state, &reference)?;
            let t = agentform::runner::transcript::read(&state.dir().join(&e.path))
                .map_err(|m| anyhow!(m))?;
            printer.out(agentform::runner::export::text(&t).trim_end());
        }
        TranscriptsCommand::Export {
            reference,
            format,
            output,
        } => {
            let e = find_transcript(&state, &reference)?;
            let t = agentform::runner::transcript::read(&state.dir().join(&e.path))
                .map_err(|m| anyhow!(m))?;
            let text = match format {
                ExportFormat::Markdown => agentform::runner::export::markdown(&t),
                ExportFormat::Html => agentform::runner::export::html(&t),
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing `{}`", path.display()))?;
                    printer.info(&format!("Wrote {}", path.display()));
                }
                None => printer.out(text.trim_end()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

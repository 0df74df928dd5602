//! `agentform state`: list, show, forget and import records; list and
//! restore backups; copy the state to another place.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;

use agentform::graph::Address;
use agentform::ops::state;
use agentform::state::StateError;

use super::apply::confirm;
use super::args::{parse_address, providers, Global, StateArg};
use super::output::Printer;

#[derive(Subcommand, Debug)]
pub enum StateCommand {
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
    /// List the backups written before each apply and destroy, oldest first
    #[command(after_help = "Example:\n  agentform state backups")]
    Backups,
    /// Bring back a backup of the records (the newest by default)
    #[command(
        after_help = "Examples:\n  agentform state restore\n  agentform state restore 20261125T101500.123Z-7.json --auto-approve\n\nThe state as it was is backed up first. A database that cannot be opened is moved aside."
    )]
    Restore {
        /// A file name in `STATE/backups`, or a path
        backup: Option<String>,
        /// Skip the confirmation prompt
        #[arg(long)]
        auto_approve: bool,
        /// Restore a backup of another state (another lineage)
        #[arg(long)]
        force: bool,
    },
    /// Copy the state to another place: a directory, or PostgreSQL
    #[command(
        after_help = "Examples:\n  agentform state migrate --to postgres://ci@db.example.com/agents\n  agentform --state postgres://ci@db.example.com/agents state migrate --to ./state\n\nThe copy is exact (records, history, serial and lineage, transcripts, the local runtime's objects) and counted against the original; the original is not changed."
    )]
    Migrate {
        /// Where to copy the state: a directory, or `postgres://…`
        #[arg(long, value_name = "DIR|URL")]
        to: StateArg,
        /// Replace what the target holds
        #[arg(long)]
        force: bool,
    },
}

pub async fn exec(g: &Global, cmd: StateCommand, printer: &Printer) -> Result<ExitCode> {
    match cmd {
        StateCommand::List => {
            let store = g.open_state("state list")?;
            for r in state::list(&store)? {
                let version = r.version.map(|v| format!(" v{v}")).unwrap_or_default();
                printer.out(&format!(
                    "{}\t{}\t{}{version}",
                    r.address, r.provider, r.remote_id
                ));
            }
        }
        StateCommand::Show { address } => {
            let store = g.open_state("state show")?;
            let r = state::show(&store, &address)?;
            printer.out(serde_norway::to_string(&r)?.trim_end());
        }
        StateCommand::Rm { address } => {
            let store = g.open_state("state rm")?;
            let r = state::rm(&store, &address)?;
            printer.out(&format!(
                "Removed {address} from the state; the remote object {} was not touched.",
                r.remote_id
            ));
        }
        StateCommand::Import { address, remote_id } => {
            let m = g.load()?;
            let store = g.open_state("state import")?;
            let providers = providers(&store, Some(&m))?;
            let record = state::import(&m, &store, &providers, &address, &remote_id).await?;
            printer.out(&format!(
                "Imported {address} as {}{}; `agentform plan` shows any difference from the manifest.",
                record.remote_id,
                record.version.map(|v| format!(" (version {v})")).unwrap_or_default()
            ));
        }
        StateCommand::Backups => {
            let backups = state::backups(&g.state_dir("backups")?)?;
            if backups.is_empty() {
                printer.info("No backups yet: `agentform apply` and `agentform destroy` write one before they change anything.");
            }
            for (file, read) in backups {
                match read {
                    Ok(b) => printer.out(&format!(
                        "{}\tserial {}\t{}\t{} resources, {} transcripts",
                        file.name,
                        b.serial,
                        b.created_at,
                        b.resources.len(),
                        b.transcripts.len()
                    )),
                    Err(e) => printer.out(&format!("{}\tunreadable: {e}", file.name)),
                }
            }
        }
        StateCommand::Restore {
            backup,
            auto_approve,
            force,
        } => return restore(g, backup.as_deref(), auto_approve, force, printer),
        StateCommand::Migrate { to, force } => {
            let from = g.location()?;
            let to = to.location()?;
            let copied = state::migrate(&from, &to, force, &g.open_options())?;
            let entries: u64 = copied.trees.values().sum();
            printer.out(&format!(
                "Copied the state from {from} to {to}: serial {}, lineage {}, {entries} entries in {} trees, {} transcripts; the counts match.",
                copied.serial,
                copied.lineage,
                copied.trees.len(),
                copied.transcripts
            ));
            if !copied.missing.is_empty() {
                printer.info(&format!(
                    "{} transcripts of the index had no contents to copy: {}",
                    copied.missing.len(),
                    copied.missing.join(", ")
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows what the backup holds and what it replaces, asks, restores.
fn restore(
    g: &Global,
    name: Option<&str>,
    auto_approve: bool,
    force: bool,
    printer: &Printer,
) -> Result<ExitCode> {
    let options = g.open_options();
    let dir = g.state_dir("backups")?;
    let pending = match state::prepare_restore(&dir, &options, name, force) {
        Err(state::StateOpError::State(e @ StateError::Open { .. })) => {
            printer.error(&format!("{e}"));
            if !confirm(
                printer,
                auto_approve,
                "move the damaged database aside and restore",
            )? {
                printer.out("Restore cancelled; nothing was changed.");
                return Ok(ExitCode::FAILURE);
            }
            let aside = state::set_aside_database(&dir)?;
            printer.info(&format!(
                "Moved the damaged database to {}",
                aside.display()
            ));
            state::prepare_restore(&dir, &options, name, force)?
        }
        other => other?,
    };
    let b = &pending.backup;
    printer.out(&format!(
        "Backup {} (serial {}, taken {}): {} resources, {} intents, {} transcripts.",
        pending.file.name,
        b.serial,
        b.created_at,
        b.resources.len(),
        b.intents.len(),
        b.transcripts.len()
    ));
    for r in &b.resources {
        printer.out(&format!("  {}\t{}\t{}", r.address, r.provider, r.remote_id));
    }
    let c = &pending.current;
    match &pending.refusal {
        Some(refusal) => printer.out(&format!(
            "It replaces a state that was refused:\n  {}",
            refusal.explain(&dir).lines().next().unwrap_or_default()
        )),
        None => printer.out(&format!(
            "It replaces the state at serial {}: {} resources, {} transcripts (backed up first).",
            c.serial, c.resources, c.transcripts
        )),
    }
    if !ask(printer, auto_approve, "restore this backup")? {
        printer.out("Restore cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let restored = pending.execute()?;
    if let Some(path) = &restored.previous {
        printer.info(&format!(
            "Backed up the state as it was to {}",
            path.display()
        ));
    }
    printer.out(&format!(
        "Restored; the state is at serial {}. `agentform plan --refresh` shows how it compares with what is deployed.",
        restored.meta.serial
    ));
    Ok(ExitCode::SUCCESS)
}

/// Apply's confirmation, with a hint that fits a restore.
fn ask(printer: &Printer, auto_approve: bool, verb: &str) -> Result<bool> {
    if !auto_approve && !std::io::stdin().is_terminal() {
        bail!("refusing to {verb} without confirmation: standard input is not a terminal\nhint: review what it replaces above and pass `--auto-approve`");
    }
    confirm(printer, auto_approve, verb)
}

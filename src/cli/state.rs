//! `agentform state`: list, show, forget and import records.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use agentform::graph::Address;
use agentform::ops::state;

use super::args::{parse_address, providers, Global};
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
    }
    Ok(ExitCode::SUCCESS)
}

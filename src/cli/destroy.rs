//! `agentform destroy`: show what would be removed, ask, execute, summarise.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use agentform::plan::render;

use super::apply::{confirm, execute, summarize};
use super::args::{providers, Global, Targeting};
use super::output::Printer;

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[command(flatten)]
    targeting: Targeting,
    /// Skip the confirmation prompt
    #[arg(long)]
    auto_approve: bool,
    /// Changes in flight at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallelism: u16,
}

pub async fn exec(g: &Global, args: DestroyArgs, printer: &Printer) -> Result<ExitCode> {
    let m = agentform::ops::destroy::manifest(&g.load_options())?;
    if let Some(m) = &m {
        super::output::learn(&m.secrets());
    }
    let state = g.open_state("destroy")?;
    let providers = providers(&state, m.as_ref())?;
    let pending = agentform::ops::destroy::plan(
        m,
        state,
        providers,
        &args.targeting.targets,
        args.parallelism as usize,
    )
    .await?;
    printer.out_styled(render::render(pending.plan(), printer.palette()).trim_end());
    if !pending.plan().has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    if !confirm(printer, args.auto_approve, "destroy these resources")? {
        printer.out("Destroy cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let report = execute(pending, printer).await?;
    Ok(summarize(&report, printer, "Destroy"))
}

//! `agentform plan`: show what apply would change; with `--locked`, fail
//! when the lock file disagrees; with `--detailed-exitcode`, exit 2 on changes;
//! with `--allow-empty`, plan a manifest that declares nothing.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use agentform::plan::{render, PlanOptions};

use super::args::{providers, Global, Targeting};
use super::output::Printer;

#[derive(Args, Debug)]
pub struct PlanArgs {
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
    /// Plan even a manifest without resources (it removes everything recorded)
    #[arg(long)]
    allow_empty: bool,
}

pub async fn exec(g: &Global, args: PlanArgs, printer: &Printer) -> Result<ExitCode> {
    let m = g.load_allowing_empty(args.allow_empty)?;
    super::args::warn_unconfined(&m, printer);
    let state = g.open_state("plan")?;
    let providers = providers(&state, Some(&m))?;
    let options = PlanOptions {
        refresh: args.refresh,
        destroy: args.destroy,
        targets: args.targeting.targets,
        parallelism: args.parallelism as usize,
    };
    let planned = agentform::ops::plan::plan(
        &m,
        &state,
        &providers,
        &options,
        args.locked,
        args.allow_empty,
    )
    .await?;
    if args.json {
        printer.out(&serde_json::to_string_pretty(&planned.plan)?);
    } else {
        printer.out_styled(render::render(&planned.plan, printer.palette()).trim_end());
    }
    planned.locked?;
    if args.detailed_exitcode && planned.plan.has_changes() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

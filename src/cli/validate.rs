//! `agentform validate`: load the manifest and say what it declares.

use std::process::ExitCode;

use anyhow::Result;

use super::args::Global;
use super::output::Printer;

pub fn exec(g: &Global, printer: &Printer) -> Result<ExitCode> {
    let m = g.load()?;
    let c = agentform::ops::validate::validate(&m);
    for warning in agentform::ops::validate::secret_warnings(&m) {
        printer.warn(&warning);
    }
    printer.out(&format!(
        "The manifest is valid: {} resources ({} environments, {} agents, {} sessions) in {} file(s).",
        c.resources, c.environments, c.agents, c.sessions, c.files
    ));
    Ok(ExitCode::SUCCESS)
}

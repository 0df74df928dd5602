//! Loading manifests held in memory, for the unit tests of every pass. The
//! root does not exist, so the project name defaults to `agentform`.

use std::path::PathBuf;

use super::loader::Loader;
use super::{Diagnostic, Diagnostics, Manifest, Resource};

/// Loads `(file name, text)` pairs as if passed with `-f`, in order.
pub(crate) fn load(files: &[(&str, &str)]) -> Result<Manifest, Diagnostics> {
    load_with_vars(files, &[])
}

/// [`load`] with `-var NAME=VALUE` overrides.
pub(crate) fn load_with_vars(
    files: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> Result<Manifest, Diagnostics> {
    load_texts(files, vars, false)
}

/// [`load`] as `destroy` and `--allow-empty` do.
pub(crate) fn load_allowing_empty(files: &[(&str, &str)]) -> Result<Manifest, Diagnostics> {
    load_texts(files, &[], true)
}

fn load_texts(
    files: &[(&str, &str)],
    vars: &[(&str, &str)],
    allow_empty: bool,
) -> Result<Manifest, Diagnostics> {
    let texts = files
        .iter()
        .map(|(name, text)| (PathBuf::from(name), text.to_string()))
        .collect();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let root = PathBuf::from("/nonexistent/agentform-unit");
    Loader::new(allow_empty).load_texts(texts, root, &vars)
}

/// The resource at `address`, which must be declared.
#[track_caller]
pub(crate) fn resource<'a>(m: &'a Manifest, address: &str) -> &'a Resource {
    let address = address.parse().expect("an address");
    m.resource(&address)
        .unwrap_or_else(|| panic!("`{address}` is not declared"))
}

/// Every problem of a manifest that must not load.
#[track_caller]
pub(crate) fn refusals(files: &[(&str, &str)]) -> Vec<Diagnostic> {
    match load(files) {
        Ok(m) => panic!("the manifest loaded: {:?}", m.resources),
        Err(d) => d.items,
    }
}

/// The one problem of a one-file manifest that must not load.
#[track_caller]
pub(crate) fn refusal(text: &str) -> Diagnostic {
    let mut items = refusals(&[("agentform.yaml", text)]);
    assert_eq!(items.len(), 1, "want exactly one problem: {items:#?}");
    items.remove(0)
}

/// `(line, column)` of a problem's primary location.
#[track_caller]
pub(crate) fn at(d: &Diagnostic) -> (usize, usize) {
    let span = d.span.unwrap_or_else(|| panic!("no position: {d:?}"));
    (span.line, span.column)
}

/// The help line of a problem.
#[track_caller]
pub(crate) fn help(d: &Diagnostic) -> &str {
    d.help
        .as_deref()
        .unwrap_or_else(|| panic!("no help: {d:?}"))
}

//! The file-level settings every manifest file must agree on: `version`
//! (required in every file, and a file must not be empty), `name`,
//! `provider` and `providers`. Resources are not looked at here.

use std::path::Path;

use marked_yaml::Node;

use super::diagnostic::{Diagnostic, Span};
use super::discover::default_project;
use super::loader::ParsedFile;
use super::render::TypedFile;
use super::spec::ProvidersSpec;
use super::validate::{unknown_provider, validate_anthropic, validate_e2b, validate_modal};
use super::yaml::{locate, Seg};
use super::PROVIDERS;

/// What the files settled on.
pub(super) struct Settings {
    pub project: String,
    /// For resources that name no provider.
    pub default_provider: String,
    pub providers: ProvidersSpec,
}

/// A value set in one file, and where it was first set.
type FirstSet = Option<(String, Span)>;

pub(super) fn settle(
    problems: &mut Vec<Diagnostic>,
    files: &[TypedFile],
    root: &Path,
    allow_empty: bool,
) -> Settings {
    let mut project: FirstSet = None;
    let mut provider: FirstSet = None;
    let mut providers = ProvidersSpec::default();
    for typed in files {
        check_version(problems, typed, allow_empty);
        let spec = &typed.spec;
        agree(
            problems,
            typed.file,
            "name",
            spec.name.clone(),
            &mut project,
        );
        agree(
            problems,
            typed.file,
            "provider",
            spec.provider.clone(),
            &mut provider,
        );
        merge_providers(problems, typed, &mut providers);
    }
    if let Some((p, span)) = &provider {
        if !PROVIDERS.contains(&p.as_str()) {
            problems.push(unknown_provider(p, Some(*span)));
        }
    }
    Settings {
        project: project
            .map(|p| p.0)
            .unwrap_or_else(|| default_project(root)),
        default_provider: provider.map(|p| p.0).unwrap_or_else(|| "local".into()),
        providers,
    }
}

/// `version: 1` in every file; a file with nothing in it at all is refused
/// unless emptiness was asked for, since planning it would remove everything.
fn check_version(problems: &mut Vec<Diagnostic>, typed: &TypedFile, allow_empty: bool) {
    let empty = matches!(&typed.file.node, Node::Mapping(m) if m.is_empty());
    match typed.spec.version {
        None if empty && allow_empty => {}
        None if empty => problems.push(
            Diagnostic::at(
                Span::file_start(typed.file.source),
                "the manifest file is empty",
            )
            .help(EMPTY_HELP),
        ),
        None => problems.push(
            Diagnostic::at(
                Span::file_start(typed.file.source),
                "the manifest file has no `version`",
            )
            .help("add `version: 1` as the first line of the file"),
        ),
        Some(v) if v != 1 => {
            let span = locate(&typed.file.node, &[Seg::Key("version".into())], None);
            problems.push(
                Diagnostic::new(format!("unsupported manifest version {v}"), span)
                    .help("this agentform reads `version: 1`"),
            );
        }
        _ => {}
    }
}

/// How to remove everything on purpose, which an empty manifest would do.
pub(crate) const EMPTY_HELP: &str = "declare resources below `version: 1`; to destroy everything on purpose, run `agentform destroy`, or pass `--allow-empty` to `plan` or `apply`";

/// Records the first file's `key`; a later file must set the same value.
fn agree(
    problems: &mut Vec<Diagnostic>,
    file: &ParsedFile,
    key: &str,
    value: Option<String>,
    slot: &mut FirstSet,
) {
    let Some(value) = value else { return };
    let span =
        locate(&file.node, &[Seg::Key(key.into())], None).unwrap_or(Span::file_start(file.source));
    match slot {
        Some((existing, first)) if *existing != value => {
            problems.push(
                Diagnostic::at(
                    span,
                    format!("`{key}` is `{value}` here but `{existing}` in another file"),
                )
                .note(*first, format!("`{key}` first set here"))
                .help(format!(
                    "set `{key}` once, or to the same value in every file"
                )),
            );
        }
        Some(_) => {}
        None => *slot = Some((value, span)),
    }
}

/// `providers` may be set in several files only when identically.
fn merge_providers(problems: &mut Vec<Diagnostic>, typed: &TypedFile, merged: &mut ProvidersSpec) {
    let spec = &typed.spec.providers;
    if *spec == ProvidersSpec::default() {
        return;
    }
    let node = &typed.file.node;
    if *merged != ProvidersSpec::default() && merged != spec {
        let span = locate(node, &[Seg::Key("providers".into())], None);
        problems.push(
            Diagnostic::new("`providers` is set differently in two manifest files", span)
                .help("declare provider settings in one file"),
        );
    }
    *merged = spec.clone();
    let at = |block: &str, path: &[&str]| {
        let mut segs = vec![Seg::Key("providers".into()), Seg::Key(block.into())];
        segs.extend(path.iter().map(|p| Seg::Key((*p).into())));
        locate(node, &segs, None)
    };
    if let Some(a) = &spec.anthropic {
        problems.extend(validate_anthropic(a, &|path| at("anthropic", path)));
    }
    if let Some(e) = &spec.e2b {
        problems.extend(validate_e2b(e, &|path| at("e2b", path)));
    }
    if let Some(m) = &spec.modal {
        problems.extend(validate_modal(m, &|path| at("modal", path)));
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, load_allowing_empty, refusal, refusals};

    #[test]
    fn files_that_agree_combine() {
        let m = load(&[
            ("a.yaml", "version: 1\nname: demo\nprovider: local\n"),
            (
                "b.yaml",
                "version: 1\nname: demo\nagents:\n  a:\n    model: m\n",
            ),
        ])
        .unwrap();
        assert_eq!(m.project, "demo");
        assert_eq!(m.resources[0].provider, "local");
    }

    #[test]
    fn without_a_name_the_project_is_the_root_directory() {
        let m = load(&[("a.yaml", "version: 1\n")]).unwrap();
        // The unit tests' root does not exist.
        assert_eq!(m.project, "agentform");
    }

    #[test]
    fn a_setting_that_differs_between_files_is_refused_with_a_note() {
        let d = refusals(&[
            ("a.yaml", "version: 1\nname: one\n"),
            ("b.yaml", "version: 1\nname: two\n"),
        ]);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].message,
            "`name` is `two` here but `one` in another file"
        );
        assert_eq!((d[0].span.unwrap().source, at(&d[0])), (1, (2, 7)));
        assert_eq!(d[0].notes[0].1, "`name` first set here");
        assert_eq!(
            help(&d[0]),
            "set `name` once, or to the same value in every file"
        );
    }

    #[test]
    fn providers_set_differently_in_two_files_are_refused() {
        let d = refusals(&[
            (
                "a.yaml",
                "version: 1\nproviders: { local: { latency_ms: 1 } }\n",
            ),
            (
                "b.yaml",
                "version: 1\nproviders: { local: { latency_ms: 2 } }\n",
            ),
        ]);
        assert_eq!(
            d[0].message,
            "`providers` is set differently in two manifest files"
        );
        assert_eq!(d[0].span.unwrap().source, 1);
    }

    #[test]
    fn only_version_1_is_read() {
        let d = refusal("version: 2\n");
        assert_eq!(d.message, "unsupported manifest version 2");
        assert_eq!(at(&d), (1, 10));
        assert_eq!(help(&d), "this agentform reads `version: 1`");
    }

    #[test]
    fn every_file_states_its_version() {
        let d = refusals(&[
            ("a.yaml", "version: 1\n"),
            ("b.yaml", "# no version\nagents:\n  a:\n    model: m\n"),
        ]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "the manifest file has no `version`");
        assert_eq!((d[0].span.unwrap().source, at(&d[0])), (1, (1, 1)));
        assert_eq!(
            help(&d[0]),
            "add `version: 1` as the first line of the file"
        );
    }

    #[test]
    fn an_empty_file_is_refused_unless_asked_for() {
        for text in ["", "# nothing yet\n", "{}\n"] {
            let d = refusal(text);
            assert_eq!(d.message, "the manifest file is empty", "{text:?}");
            assert_eq!(at(&d), (1, 1));
            assert!(help(&d).contains("`agentform destroy`"));
            assert!(help(&d).contains("`--allow-empty`"));
        }
        let m = load_allowing_empty(&[("a.yaml", "# nothing\n")]).unwrap();
        assert!(m.resources.is_empty());
        // Asking for emptiness does not excuse a missing version.
        let err = load_allowing_empty(&[("a.yaml", "name: x\n")]).unwrap_err();
        assert_eq!(err.items[0].message, "the manifest file has no `version`");
    }

    #[test]
    fn an_unknown_default_provider_lists_the_known_ones() {
        let d = refusal("version: 1\nprovider: lcoal\n");
        assert_eq!(d.message, "unknown provider `lcoal`");
        assert_eq!(at(&d), (2, 11));
        assert_eq!(
            help(&d),
            "this build of agentform provides: local, anthropic, e2b, modal"
        );
    }
}

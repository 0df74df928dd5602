//! The bad-manifest corpus in `tests/bad/`: every entry holds exactly one
//! problem, and `validate`, `plan` and `apply` must each refuse it with exit
//! code 1, a diagnostic pointing at the right file, line and column, the
//! expected message, a `help:` line, and no change to the state. The report
//! itself is snapshotted per entry (`snapshots/integration__bad_manifests__
//! diagnostic@ENTRY.snap`), so a change of wording shows up in review.
//!
//! An entry is a file `NN-name.yaml`, or a directory `NN-name/` of several
//! files passed together with `-f DIR`. The first line of the file holding the
//! error reads `# expect: LINE:COL message fragment` (the comment is line 1).
//! A new case is one new entry; `INSTA_UPDATE=always cargo test bad_manifests`
//! writes its snapshot, to be reviewed before it is committed.
//!
//! Every command runs with `AGENTFORM_CORPUS_SECRET` set: an entry may read
//! it with `env()`, and its value must never appear in any output.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Applied first, so every bad command runs against a non-empty state.
const GOOD: &str = "version: 1\nenvironments:\n  baseline:\n    config: { type: cloud }\n";

const MIN_ENTRIES: usize = 30;

/// An environment variable every command sees, and its value, which no
/// report may show.
const SECRET_VAR: &str = "AGENTFORM_CORPUS_SECRET";
const SECRET: &str = "CORPUSSECRET-zz";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("bad")
}

/// One corpus entry.
#[derive(Debug)]
struct Entry {
    /// `NN-name.yaml` or `NN-name` (a directory).
    name: String,
    /// The files to copy, relative to the corpus directory, with their contents.
    files: Vec<(String, String)>,
    /// The file that holds the error, as the diagnostic prints it (`bad/...`).
    shown: String,
    line: usize,
    column: usize,
    fragment: String,
}

/// `# expect: LINE:COL fragment` → (line, column, fragment).
fn parse_expect(first_line: &str) -> Option<(usize, usize, String)> {
    let rest = first_line.strip_prefix("# expect:")?.trim_start();
    let (position, fragment) = rest.split_once(' ')?;
    let (line, column) = position.split_once(':')?;
    let fragment = fragment.trim();
    if fragment.is_empty() {
        return None;
    }
    Some((
        line.parse().ok()?,
        column.parse().ok()?,
        fragment.to_string(),
    ))
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Reads one corpus entry, and what is malformed about it: a malformed entry
/// is reported, not skipped.
fn load_entry(path: &Path) -> (Option<Entry>, Vec<String>) {
    let dir = corpus_dir();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 file name")
        .to_string();
    let candidates: Vec<PathBuf> = if path.is_dir() {
        let mut inner: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_yaml(p))
            .collect();
        inner.sort();
        inner
    } else if is_yaml(path) {
        vec![path.to_path_buf()]
    } else {
        return (
            None,
            vec![format!("{name}: not a .yaml file or a directory")],
        );
    };

    let mut problems = Vec::new();
    let mut files = Vec::new();
    let mut expect = Vec::new();
    for file in &candidates {
        let rel = file
            .strip_prefix(&dir)
            .expect("inside the corpus")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let first = text.lines().next().unwrap_or_default();
        if first.starts_with("# expect:") {
            match parse_expect(first) {
                Some((line, column, fragment)) => {
                    // The expected position must exist in the file.
                    let fits = text.lines().nth(line.saturating_sub(1)).is_some_and(|l| {
                        line >= 1 && column >= 1 && column <= l.chars().count() + 1
                    });
                    if !fits {
                        problems.push(format!(
                            "{rel}: `# expect: {line}:{column}` is outside the file"
                        ));
                    }
                    expect.push((rel.clone(), line, column, fragment));
                }
                None => problems.push(format!(
                    "{rel}: malformed first line {first:?}; want `# expect: LINE:COL fragment`"
                )),
            }
        }
        files.push((rel, text));
    }
    let entry = match expect.len() {
        1 => {
            let (rel, line, column, fragment) = expect.remove(0);
            Some(Entry {
                name,
                files,
                shown: format!("bad/{rel}"),
                line,
                column,
                fragment,
            })
        }
        0 if files.is_empty() => {
            problems.push(format!("{name}: holds no yaml files"));
            None
        }
        0 => {
            problems.push(format!("{name}: no file starts with `# expect:`"));
            None
        }
        n => {
            problems.push(format!(
                "{name}: {n} files start with `# expect:`; want one"
            ));
            None
        }
    };
    (entry, problems)
}

fn lock_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for e in read.flatten() {
        let p = e.path();
        if p.is_dir() {
            lock_files(&p, out);
        } else if p.file_name().is_some_and(|n| n == "agentform.lock") {
            out.push(p);
        }
    }
}

/// The messages, notes and help of a report, without the quoted source lines
/// (a fragment must not match merely because the manifest text contains it).
fn message_lines(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("error:") || l.starts_with("= "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_help(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.trim_start().trim_start_matches("= ").starts_with("help:"))
}

/// What one entry did.
#[derive(Default)]
struct Checked {
    /// Empty when the entry behaves.
    failures: Vec<String>,
    /// What `validate` printed on stderr, the temporary directory filtered out.
    report: String,
}

fn failed_check(failure: &str) -> Checked {
    Checked {
        failures: vec![failure.to_string()],
        report: String::new(),
    }
}

/// Runs one entry.
fn check(entry: &Entry) -> Checked {
    let mut failures = Vec::new();
    let t = Test::new().env(SECRET_VAR, SECRET);
    t.write("good/agentform.yaml", GOOD);
    let good = t.run(&["apply", "-f", "good/agentform.yaml", "--auto-approve"]);
    if good.code != 0 {
        return failed_check(&format!(
            "the baseline apply failed (exit {})\n{}",
            good.code, good.stderr
        ));
    }
    let before = t.state_snapshot();
    if before.is_empty() {
        return failed_check("the baseline apply left no state to compare");
    }
    for (rel, text) in &entry.files {
        t.write(&format!("bad/{rel}"), text);
    }

    let target = format!("bad/{}", entry.name);
    let location = format!("--> {}:{}:{}", entry.shown, entry.line, entry.column);
    let commands: [&[&str]; 3] = [
        &["validate", "-f", &target],
        &["plan", "-f", &target],
        &["apply", "--auto-approve", "-f", &target],
    ];
    // (command, what is wrong, stderr) of each command that misbehaved.
    let mut wrong_runs: Vec<(String, String, String)> = Vec::new();
    let mut report = None;
    for args in commands {
        let out = t.run(args);
        report.get_or_insert_with(|| without_temp_dir(&out.stderr, t.root()));
        let mut wrong = Vec::new();
        if out.code != 1 {
            wrong.push(format!("exit code {} (want 1)", out.code));
        }
        if out.stderr.contains("panicked") {
            wrong.push("panicked".to_string());
        }
        if !out.stderr.contains(&location) {
            let actual: Vec<&str> = out
                .stderr
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("--> "))
                .collect();
            wrong.push(format!("no `{location}` (got {actual:?})"));
        }
        if !message_lines(&out.stderr).contains(&entry.fragment) {
            wrong.push(format!("message lacks {:?}", entry.fragment));
        }
        if !has_help(&out.stderr) {
            wrong.push("no `help:` line".to_string());
        }
        if out.stderr.contains(SECRET) || out.stdout.contains(SECRET) {
            wrong.push(format!("the value of {SECRET_VAR} was shown"));
        }
        let errors = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count();
        if errors != 1 {
            wrong.push(format!("{errors} errors reported (want exactly 1)"));
        }
        if !wrong.is_empty() {
            wrong_runs.push((args[0].to_string(), wrong.join("; "), out.stderr));
        }
    }
    // The three commands share the loader, so they usually fail alike: report
    // identical failures once.
    let mut i = 0;
    while i < wrong_runs.len() {
        let (_, what, stderr) = &wrong_runs[i];
        let same: Vec<&str> = wrong_runs[i..]
            .iter()
            .take_while(|(_, w, e)| w == what && e == stderr)
            .map(|(c, _, _)| c.as_str())
            .collect();
        failures.push(format!(
            "{}: {what}\n    --- stderr\n{}",
            same.join(", "),
            indent(stderr)
        ));
        i += same.len();
    }

    if t.state_snapshot() != before {
        failures.push("the state changed".to_string());
    }
    let mut locks = Vec::new();
    lock_files(&t.path("bad"), &mut locks);
    if !locks.is_empty() {
        failures.push(format!("a lock file was written: {locks:?}"));
    }
    Checked {
        failures,
        report: report.unwrap_or_default(),
    }
}

/// `text` with the test's temporary directory written `[TEMP_DIR]`.
fn without_temp_dir(text: &str, root: &Path) -> String {
    let mut text = text.to_string();
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    for dir in [canonical.as_path(), root] {
        text = text.replace(&dir.display().to_string(), "[TEMP_DIR]");
    }
    text
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_bad_manifest_is_refused_with_its_location() {
    let mut entries = 0;
    let mut failed: Vec<(Entry, Vec<String>)> = Vec::new();
    let mut malformed = Vec::new();
    // insta collects the snapshot mismatches and panics after the last entry;
    // the behaviour report below comes first, then that panic.
    let snapshots = std::panic::catch_unwind(AssertUnwindSafe(|| {
        insta::glob!("bad/*", |path| {
            let (entry, problems) = load_entry(path);
            malformed.extend(problems);
            let Some(entry) = entry else { return };
            entries += 1;
            let checked = std::panic::catch_unwind(AssertUnwindSafe(|| check(&entry)))
                .unwrap_or_else(|_| failed_check("the check itself panicked"));
            insta::assert_snapshot!("diagnostic", checked.report);
            if !checked.failures.is_empty() {
                failed.push((entry, checked.failures));
            }
        });
    }));
    assert!(
        entries >= MIN_ENTRIES,
        "the corpus in {} has {entries} entries; want at least {MIN_ENTRIES}",
        corpus_dir().display(),
    );

    let mut report = String::new();
    for (e, failures) in &failed {
        report.push_str(&format!(
            "\n=== {} (want {}:{}:{} {:?})\n    (agentform validate|plan|apply --auto-approve -f bad/{})\n",
            e.name, e.shown, e.line, e.column, e.fragment, e.name
        ));
        for f in failures {
            report.push_str(&format!("  - {f}\n"));
        }
    }
    if !malformed.is_empty() {
        report.push_str("\n=== malformed corpus entries\n");
        for p in &malformed {
            report.push_str(&format!("  - {p}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "{} of {entries} bad manifests were not refused as expected: {}\n{report}",
        failed.len(),
        failed
            .iter()
            .map(|(e, _)| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Err(panic) = snapshots {
        std::panic::resume_unwind(panic);
    }
}

/// `-var` for a variable the manifest does not declare has no position in a
/// file, but must still be refused helpfully, before the state is touched.
#[test]
fn var_for_an_undeclared_variable_is_refused() {
    let t = Test::new();
    t.write("agentform.yaml", GOOD);
    t.run(&["apply", "--auto-approve"]).success();
    let before = t.state_snapshot();
    assert!(!before.is_empty());

    t.write(
        "with-vars.yaml",
        "version: 1\nvars:\n  model: claude-sonnet-4-6\n  team: core\nenvironments:\n  baseline:\n    config: { type: cloud }\n",
    );
    let cases: [(&str, &str); 2] = [
        // No `vars:` at all: say how to declare one.
        ("agentform.yaml", "declare it under `vars:`"),
        // Some declared: list them (a likely typo of `model`).
        ("with-vars.yaml", "declared variables: model, team"),
    ];
    for (file, help) in cases {
        for command in [
            &["validate"][..],
            &["plan"][..],
            &["apply", "--auto-approve"][..],
        ] {
            let mut args = command.to_vec();
            args.extend(["-f", file, "-var", "modle=claude-haiku-4-5"]);
            let out = t.run(&args).code(1);
            let what = format!("`agentform {}`", args.join(" "));
            assert!(
                out.stderr
                    .contains("`-var modle=…` sets a variable the manifest does not declare"),
                "{what}: unhelpful message\n{}",
                out.stderr
            );
            assert!(
                has_help(&out.stderr) && out.stderr.contains(help),
                "{what}: help lacks {help:?}\n{}",
                out.stderr
            );
            assert!(
                !out.stderr.contains("panicked"),
                "{what} panicked\n{}",
                out.stderr
            );
            assert!(
                !out.stderr.contains("-->"),
                "{what}: a command-line problem has no file position\n{}",
                out.stderr
            );
        }
    }
    assert_eq!(
        t.state_snapshot(),
        before,
        "a refused -var changed the state"
    );
}

//! `retention`: set in one file, or identically in several; a run keeps at
//! least its own transcripts.

use crate::manifest::diagnostic::Diagnostic;
use crate::manifest::render::TypedFile;
use crate::manifest::spec::RetentionSpec;
use crate::manifest::yaml::{locate, Seg};

/// The retention the files declare (none: keep everything).
pub(crate) fn settle(problems: &mut Vec<Diagnostic>, files: &[TypedFile]) -> RetentionSpec {
    let mut settled: Option<RetentionSpec> = None;
    for typed in files {
        let Some(spec) = &typed.spec.retention else {
            continue;
        };
        let at = |key: Option<&str>| {
            let mut path = vec![Seg::Key("retention".into())];
            path.extend(key.map(|k| Seg::Key(k.into())));
            locate(&typed.file.node, &path, None)
        };
        if spec.transcripts == Some(0) {
            problems.push(
                Diagnostic::new("`retention.transcripts` must be at least 1", at(Some("transcripts")))
                    .help("a run keeps at least its own transcripts; leave `transcripts` out to keep them all"),
            );
        }
        match &settled {
            Some(first) if first != spec => problems.push(
                Diagnostic::new(
                    "`retention` is set differently in two manifest files",
                    at(None),
                )
                .help("declare `retention` in one file"),
            ),
            Some(_) => {}
            None => settled = Some(spec.clone()),
        }
    }
    settled.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::manifest::spec::RetentionSpec;
    use crate::manifest::test_support::{at, help, load, refusal, refusals};

    #[test]
    fn retention_is_read() {
        let m = load(&[(
            "a.yaml",
            "version: 1\nretention: { transcripts: 5, archived_sessions: 0 }\n",
        )])
        .unwrap();
        assert_eq!(
            m.retention,
            RetentionSpec {
                transcripts: Some(5),
                archived_sessions: Some(0)
            }
        );
    }

    #[test]
    fn without_retention_everything_is_kept() {
        let m = load(&[("a.yaml", "version: 1\n")]).unwrap();
        assert_eq!(m.retention, RetentionSpec::default());
    }

    #[test]
    fn keeping_no_transcripts_is_refused_where_it_is_written() {
        let d = refusal("version: 1\nretention:\n  transcripts: 0\n");
        assert_eq!(d.message, "`retention.transcripts` must be at least 1");
        assert_eq!(at(&d), (3, 16));
        assert!(help(&d).contains("leave `transcripts` out"), "{}", help(&d));
    }

    #[test]
    fn retention_set_differently_in_two_files_is_refused() {
        let d = refusals(&[
            ("a.yaml", "version: 1\nretention: { transcripts: 2 }\n"),
            ("b.yaml", "version: 1\nretention: { transcripts: 3 }\n"),
        ]);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(
            d[0].message,
            "`retention` is set differently in two manifest files"
        );
        assert_eq!(d[0].span.unwrap().source, 1);
    }

    #[test]
    fn an_unknown_retention_key_is_refused() {
        let d = refusal("version: 1\nretention: { transcript: 2 }\n");
        assert!(
            d.message.contains("unknown field `transcript`"),
            "{}",
            d.message
        );
    }
}

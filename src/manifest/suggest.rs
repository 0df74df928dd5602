//! Did-you-mean: the help of a reference to an undeclared resource lists the
//! declared ones of its kind and names the closest. Wording only.

use std::collections::BTreeMap;

use super::diagnostic::{Diagnostic, Span};
use crate::graph::{Address, Kind};

/// The declared names of each kind, in address order.
pub(super) struct Names(BTreeMap<Kind, Vec<String>>);

impl Names {
    pub(super) fn of<'a>(addresses: impl IntoIterator<Item = &'a Address>) -> Names {
        let mut names: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
        for a in addresses {
            names.entry(a.kind).or_default().push(a.name.clone());
        }
        Names(names)
    }
}

/// `target` is referred to at `span` but not declared.
pub(super) fn not_declared(span: Span, target: &Address, names: &Names) -> Diagnostic {
    let known = names
        .0
        .get(&target.kind)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let section = target.kind.section();
    let help = if known.is_empty() {
        format!("declare it under `{section}:`")
    } else {
        match known.iter().find(|n| similar(n, &target.name)) {
            Some(n) => format!(
                "did you mean `{n}`? declared {section}: {}",
                known.join(", ")
            ),
            None => format!("declared {section}: {}", known.join(", ")),
        }
    };
    Diagnostic::at(span, format!("`{target}` is not declared")).help(help)
}

/// At most two edits (insertions, deletions, substitutions) apart.
fn similar(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    const SPAN: Span = Span {
        source: 0,
        line: 1,
        column: 1,
    };

    #[test]
    fn similar_allows_two_edits() {
        assert!(similar("writer", "writer"));
        assert!(similar("writer", "wrtier"));
        assert!(similar("writer", "writ"));
        assert!(similar("é", "e"));
        assert!(!similar("writer", "reader"));
        assert!(!similar("ab", "abcde"));
    }

    #[test]
    fn the_help_names_the_closest_and_lists_the_declared() {
        let declared = [
            addr("agent.writer"),
            addr("agent.reviewer"),
            addr("environment.data"),
        ];
        let names = Names::of(&declared);
        let d = not_declared(SPAN, &addr("agent.writr"), &names);
        assert_eq!(d.message, "`agent.writr` is not declared");
        assert_eq!(
            d.help.as_deref(),
            Some("did you mean `writer`? declared agents: writer, reviewer")
        );
        let d = not_declared(SPAN, &addr("agent.zzz"), &names);
        assert_eq!(d.help.as_deref(), Some("declared agents: writer, reviewer"));
        let d = not_declared(SPAN, &addr("session.s"), &names);
        assert_eq!(d.help.as_deref(), Some("declare it under `sessions:`"));
    }
}

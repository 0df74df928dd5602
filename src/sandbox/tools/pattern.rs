//! Glob patterns of the `glob` tool, compiled by globset with the tool's
//! options and bounded in size first. It matches strings only; it must not
//! walk directories.
//!
//! Where globset's syntax differs from the hand-written engine it replaced:
//! `\` inside `[...]` is a literal backslash (it escaped before), POSIX
//! classes such as `[[:digit:]]` work, and `**` may stand inside `{...}`.
//! Alternatives are compiled into one automaton instead of being expanded,
//! so `{a,b}` repeated costs linear, not exponential, time.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Longest pattern compiled, in characters: real patterns are far shorter,
/// and the bound keeps compile time and matcher size small whatever the
/// pattern holds.
pub(super) const GLOB_MAX_CHARS: usize = 1024;

/// Deepest nesting of `{…}` groups compiled (globset's own limit is 100).
const GLOB_MAX_NESTING: usize = 10;

/// A compiled glob: `*` and `?` do not cross `/`; `**` as a whole segment
/// matches any number of directories; `[abc]`, `[a-z]`, `[!a]`/`[^a]`; `{a,b}`
/// alternatives (nested too, empty ones allowed); `\` escapes outside
/// classes. A leading `./` is ignored.
#[derive(Debug, Clone)]
pub struct Glob {
    set: GlobSet,
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
        check_bounds(pattern)?;
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .empty_alternates(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        // A set, not `compile_matcher`: that one panics on a regex over
        // globset's size limit, a set returns the error.
        let set = GlobSetBuilder::new()
            .add(glob)
            .build()
            .map_err(|e| e.kind().to_string())?;
        Ok(Self { set })
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
}

/// Refuses patterns too long or too deeply nested to be worth compiling.
fn check_bounds(pattern: &str) -> Result<(), String> {
    let chars = pattern.chars().count();
    if chars > GLOB_MAX_CHARS {
        return Err(format!(
            "the pattern has {chars} characters, more than the {GLOB_MAX_CHARS} allowed"
        ));
    }
    let mut depth = 0usize;
    let mut escaped = false;
    for c in pattern.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '{' => {
                depth += 1;
                if depth > GLOB_MAX_NESTING {
                    return Err(format!(
                        "`{{…}}` groups are nested more than {GLOB_MAX_NESTING} deep"
                    ));
                }
            }
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_syntax() {
        let m = |p: &str, s: &str| Glob::new(p).unwrap().matches(s);
        assert!(m("*", "a.rs") && !m("*", "a/b.rs"));
        assert!(m("**", "a/b/c") && m("**", "a"));
        assert!(m("**/c", "c") && m("**/c", "a/b/c") && !m("**/c", "a/bc"));
        assert!(m("a/**/c", "a/c") && m("a/**/c", "a/x/y/c") && !m("a/**/c", "ab/c"));
        assert!(m("a/**", "a/x/y") && !m("a/**", "b/x"));
        assert!(m("a**", "abc") && !m("a**", "a/b"));
        assert!(m("?.rs", "a.rs") && !m("?.rs", "ab.rs") && !m("a?b", "a/b"));
        assert!(m("[abc].txt", "b.txt") && !m("[abc].txt", "d.txt"));
        assert!(m("[a-c]x", "bx") && !m("[a-c]x", "dx"));
        assert!(m("[!a-c]x", "dx") && m("[^a]x", "bx") && !m("[!a]x", "ax"));
        assert!(m("[]]", "]") && m("[a-]", "-"));
        assert!(m("\\*", "*") && !m("\\*", "a"));
        assert!(m("{src,tests}/**/*.{rs,toml}", "tests/x/Cargo.toml"));
        assert!(m("a{b,c{d,e}}f", "acef") && !m("a{b,c{d,e}}f", "acf"));
        assert!(m("./a.rs", "a.rs"));
        assert!(m("*.rs", ".hidden.rs"));
        assert!(m("*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!m(
            "*a*a*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
        assert!(
            Glob::new("[abc").is_err() && Glob::new("{a,b").is_err() && Glob::new("a\\").is_err()
        );
        assert!(Glob::new("[z-a]").is_err());
    }

    #[test]
    fn documented_extensions() {
        let m = |p: &str, s: &str| Glob::new(p).unwrap().matches(s);
        assert!(m("a{b,}c", "ac") && m("a{b,}c", "abc"));
        assert!(m("f[[:digit:]].txt", "f7.txt") && !m("f[[:digit:]].txt", "fx.txt"));
        assert!(m("{src/**,*.md}", "src/a/b.rs") && m("{src/**,*.md}", "x.md"));
    }

    #[test]
    fn bounds_refuse_long_and_deep_patterns_quickly() {
        let started = std::time::Instant::now();
        let long = "**/".repeat(30_000);
        let e = Glob::new(&long).unwrap_err();
        assert!(e.contains("90000 characters"), "{e}");
        assert!(Glob::new(&"a".repeat(GLOB_MAX_CHARS)).is_ok());
        assert!(Glob::new(&"a".repeat(GLOB_MAX_CHARS + 1)).is_err());
        let deep = |n: usize| format!("{}x{}", "{a,".repeat(n), "}".repeat(n));
        let nested = Glob::new(&deep(GLOB_MAX_NESTING)).unwrap();
        assert!(nested.matches("x") && nested.matches("a") && !nested.matches("ax"));
        assert!(Glob::new(&deep(GLOB_MAX_NESTING + 1))
            .unwrap_err()
            .contains("nested"));
        // Escaped braces do not nest.
        assert!(Glob::new(&"\\{".repeat(20)).is_ok());
        // 2^26 alternatives, compiled as one automaton rather than expanded.
        let braces = Glob::new(&"{a,b}".repeat(26)).unwrap();
        assert!(braces.matches(&"ab".repeat(13)) && !braces.matches(&"a".repeat(25)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

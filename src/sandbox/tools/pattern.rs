//! Glob patterns of the `glob` tool: a small hand-written engine with brace
//! expansion. It matches strings only; it must not walk directories.

/// A compiled glob: `*` and `?` do not cross `/`; `**` as a whole segment
/// matches any number of directories; `[abc]`, `[a-z]`, `[!a]`/`[^a]`; `{a,b}`
/// alternatives; `\` escapes.
#[derive(Debug, Clone)]
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**/`: empty or anything ending in `/`.
    Dirs,
    /// `**` at the end: anything.
    All,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Alternatives of a pattern with `{a,b}` groups expanded (nested too).
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    // Find the first top-level `{` (not escaped, not in a class) and its match.
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '{' if !in_class => {
                let mut depth = 0;
                let mut parts = Vec::new();
                let mut start = i + 1;
                let mut j = i;
                while j < chars.len() {
                    match chars[j] {
                        '\\' => j += 1,
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                parts.push(chars[start..j].iter().collect::<String>());
                                break;
                            }
                        }
                        ',' if depth == 1 => {
                            parts.push(chars[start..j].iter().collect::<String>());
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unclosed `{`".to_string());
                }
                let prefix: String = chars[..i].iter().collect();
                let suffix: String = chars[j + 1..].iter().collect();
                let mut out = Vec::new();
                for part in parts {
                    out.extend(expand_braces(&format!("{prefix}{part}{suffix}"))?);
                }
                return Ok(out);
            }
            _ => {}
        }
        i += 1;
    }
    Ok(vec![pattern.to_string()])
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = *chars.get(i + 1).ok_or("trailing `\\`")?;
                tokens.push(Token::Literal(c));
                i += 2;
            }
            '?' => {
                tokens.push(Token::One);
                i += 1;
            }
            '*' => {
                let mut j = i;
                while j < chars.len() && chars[j] == '*' {
                    j += 1;
                }
                let segment_start = i == 0 || chars[i - 1] == '/';
                if j - i >= 2 && segment_start && j == chars.len() {
                    tokens.push(Token::All);
                    i = j;
                } else if j - i >= 2 && segment_start && chars[j] == '/' {
                    tokens.push(Token::Dirs);
                    i = j + 1;
                } else {
                    tokens.push(Token::Star);
                    i = j;
                }
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('!' | '^'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(j) else {
                        return Err("unclosed `[`".to_string());
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let c = if c == '\\' {
                        j += 1;
                        *chars.get(j).ok_or("unclosed `[`")?
                    } else {
                        c
                    };
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']')
                    {
                        let end = chars[j + 2];
                        if end < c {
                            return Err(format!("invalid range `{c}-{end}`"));
                        }
                        ranges.push((c, end));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                tokens.push(Token::Class { negated, ranges });
                i = j + 1;
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// Whether `tokens` match all of `path`; memoized over (token, char) states.
fn matches_tokens(tokens: &[Token], path: &[char]) -> bool {
    let width = path.len() + 1;
    let mut failed = vec![false; (tokens.len() + 1) * width];
    fn go(
        tokens: &[Token],
        path: &[char],
        t: usize,
        s: usize,
        failed: &mut Vec<bool>,
        width: usize,
    ) -> bool {
        if failed[t * width + s] {
            return false;
        }
        let result = match tokens.get(t) {
            None => s == path.len(),
            Some(token) => match token {
                Token::Literal(c) => {
                    path.get(s) == Some(c) && go(tokens, path, t + 1, s + 1, failed, width)
                }
                Token::One => {
                    path.get(s).is_some_and(|&c| c != '/')
                        && go(tokens, path, t + 1, s + 1, failed, width)
                }
                Token::Class { negated, ranges } => {
                    path.get(s).is_some_and(|&c| {
                        c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                    }) && go(tokens, path, t + 1, s + 1, failed, width)
                }
                Token::Star => {
                    go(tokens, path, t + 1, s, failed, width)
                        || (path.get(s).is_some_and(|&c| c != '/')
                            && go(tokens, path, t, s + 1, failed, width))
                }
                Token::All => (s..=path.len()).any(|k| go(tokens, path, t + 1, k, failed, width)),
                Token::Dirs => {
                    go(tokens, path, t + 1, s, failed, width)
                        || (s + 1..=path.len()).any(|k| {
                            path[k - 1] == '/' && go(tokens, path, t + 1, k, failed, width)
                        })
                }
            },
        };
        if !result {
            failed[t * width + s] = true;
        }
        result
    }
    go(tokens, path, 0, 0, &mut failed, width)
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
        let alternatives = expand_braces(pattern)?
            .iter()
            .map(|p| tokenize(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { alternatives })
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        self.alternatives
            .iter()
            .any(|tokens| matches_tokens(tokens, &chars))
    }
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
}

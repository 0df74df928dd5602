//! YAML with positions: parsing into marked nodes, turning them into JSON, and
//! finding the position of a path when a later stage reports a problem.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};
use serde_json::Value;

use super::diagnostic::{Diagnostic, Span};

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub type Path = Vec<Seg>;

pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parses one file; the top level must be a mapping.
pub fn parse(source: usize, text: &str) -> Result<Node, Diagnostic> {
    if let Some(line) = second_document(text) {
        return Err(Diagnostic::at(
            Span {
                source,
                line,
                column: 1,
            },
            "a manifest file holds one YAML document, but this one starts a second",
        )
        .help("split the documents into separate files and pass both with `-f`"));
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    // The loader asserts on event orders it does not expect; a panic there must
    // become an error, never a crash.
    let parsed =
        std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(source, text, options));
    let parsed = match parsed {
        Ok(result) => result,
        Err(_) => {
            return Err(Diagnostic::at(
                Span::file_start(source),
                "this YAML uses a construct agentform cannot read",
            )
            .help("use plain mappings, sequences and scalars (no anchors, aliases, tags or multiple documents)"))
        }
    };
    parsed.map_err(|e| match e {
        // The loader marks the node after the anchor; the `&` itself is the place.
        LoadError::UnexpectedAnchor(m) => {
            let upto = text
                .char_indices()
                .nth(m.character())
                .map(|(i, _)| i)
                .unwrap_or(text.len());
            let at = text[..upto].rfind(['&', '*']).map(|i| {
                let line = text[..i].matches('\n').count() + 1;
                let column = text[..i]
                    .rsplit('\n')
                    .next()
                    .map(|l| l.chars().count())
                    .unwrap_or(0)
                    + 1;
                Span {
                    source,
                    line,
                    column,
                }
            });
            let d = load_error(source, LoadError::UnexpectedAnchor(m));
            match at {
                Some(span) => Diagnostic {
                    span: Some(span),
                    ..d
                },
                None => d,
            }
        }
        e => load_error(source, e),
    })
}

fn second_document(text: &str) -> Option<usize> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if seen_content {
                return Some(i + 1);
            }
            continue;
        }
        let t = trimmed.trim_start();
        if !t.is_empty() && !t.starts_with('#') {
            seen_content = true;
        }
    }
    None
}

fn marker_span(source: usize, m: &marked_yaml::Marker) -> Span {
    Span {
        source,
        line: m.line().max(1),
        column: m.column().max(1),
    }
}

fn load_error(source: usize, e: LoadError) -> Diagnostic {
    match e {
        LoadError::TopLevelMustBeMapping(m) => Diagnostic::at(
            marker_span(source, &m),
            "the top level of a manifest must be a mapping",
        )
        .help("start the file with `version: 1` and declare `agents:`, `environments:` or `sessions:` below it"),
        LoadError::TopLevelMustBeSequence(m) => {
            Diagnostic::at(marker_span(source, &m), "the top level must be a sequence")
        }
        LoadError::UnexpectedAnchor(m) => Diagnostic::at(
            marker_span(source, &m),
            "YAML anchors and aliases are not supported in manifests",
        )
        .help("repeat the value, or put it in `vars` and use `{{ vars.NAME }}`"),
        LoadError::MappingKeyMustBeScalar(m) => Diagnostic::at(
            marker_span(source, &m),
            "mapping keys must be plain strings",
        ),
        LoadError::UnexpectedTag(m) => Diagnostic::at(
            marker_span(source, &m),
            "YAML tags (`!tag`) are not supported in manifests",
        )
        .help("remove the tag; values are typed by the field they are in"),
        LoadError::ScanError(m, err) => Diagnostic::at(
            marker_span(source, &m),
            format!("invalid YAML: {}", scan_message(&err.to_string())),
        )
        .help("check the indentation and quoting around this position"),
        LoadError::DuplicateKey(inner) => {
            let key = inner.key.as_str().to_string();
            let second = Span::from_marked(inner.key.span()).unwrap_or(Span::file_start(source));
            let mut d = Diagnostic::at(second, format!("duplicate key `{key}`"))
                .help("each key may appear once in a mapping; remove or rename one of them");
            if let Some(first) = Span::from_marked(inner.prev_key.span()) {
                d = d.note(first, format!("`{key}` was first defined here"));
            }
            d
        }
    }
}

/// yaml-rust2 appends its own position to scan errors; ours is printed separately.
fn scan_message(raw: &str) -> String {
    match raw.find(" at byte ") {
        Some(i) => raw[..i].to_string(),
        None => raw.to_string(),
    }
}

/// Where a node starts. A block mapping's own mark sits at its first key's
/// colon, so its first key is the better place.
pub fn span_of(node: &Node) -> Option<Span> {
    if let Node::Mapping(m) = node {
        if let Some(first) = m.keys().next().and_then(|k| Span::from_marked(k.span())) {
            return Some(first);
        }
    }
    Span::from_marked(node.span())
}

/// The first node below `node` (depth first, keys before values) that `hit`
/// accepts; used when serde lost the exact position inside an enum.
pub fn find(node: &Node, hit: &dyn Fn(Found<'_>) -> bool) -> Option<Span> {
    match node {
        Node::Scalar(s) => hit(Found::Scalar(s.as_str()))
            .then(|| Span::from_marked(s.span()))
            .flatten(),
        Node::Sequence(seq) => seq.iter().find_map(|n| find(n, hit)),
        Node::Mapping(map) => map.iter().find_map(|(k, v)| {
            if hit(Found::Key(k.as_str())) {
                Span::from_marked(k.span())
            } else {
                find(v, hit)
            }
        }),
    }
}

/// What [`find`] offers to its predicate.
#[derive(Debug, Clone, Copy)]
pub enum Found<'a> {
    Key(&'a str),
    Scalar(&'a str),
}

/// The node at `path`, if every step exists.
pub fn node_at<'a>(root: &'a Node, path: &[Seg]) -> Option<&'a Node> {
    let mut node = root;
    for seg in path {
        node = match (seg, node) {
            (Seg::Key(k), Node::Mapping(m)) => m.get_node(k)?,
            (Seg::Index(i), Node::Sequence(s)) => s.get_node(*i)?,
            (Seg::Key(k), Node::Sequence(s)) => s.get_node(k.parse().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Interprets a scalar by the YAML 1.2 core schema; quoted scalars stay strings.
pub fn scalar_value(node: &MarkedScalarNode) -> Value {
    let s = node.as_str();
    if !node.may_coerce() {
        return Value::String(s.to_string());
    }
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let looks_numeric = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
        if let Some(hex) = s.strip_prefix("0x") {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return Value::from(i);
            }
        }
        if let Some(oct) = s.strip_prefix("0o") {
            if let Ok(i) = i64::from_str_radix(oct, 8) {
                return Value::from(i);
            }
        }
        if s.contains(['.', 'e', 'E']) {
            if let Ok(f) = s.parse::<f64>() {
                if f.is_finite() {
                    if let Some(n) = serde_json::Number::from_f64(f) {
                        return Value::Number(n);
                    }
                }
            }
        }
    }
    Value::String(s.to_string())
}

/// Converts a node to JSON, handing every scalar to `scalar` with its path.
pub fn to_json<F>(node: &Node, path: &mut Path, scalar: &mut F) -> Result<Value, Diagnostic>
where
    F: FnMut(&MarkedScalarNode, &[Seg]) -> Result<Value, Diagnostic>,
{
    Ok(match node {
        Node::Scalar(s) => scalar(s, path)?,
        Node::Sequence(seq) => {
            let mut out = Vec::with_capacity(seq.len());
            for (i, item) in seq.iter().enumerate() {
                path.push(Seg::Index(i));
                let v = to_json(item, path, scalar);
                path.pop();
                out.push(v?);
            }
            Value::Array(out)
        }
        Node::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map.iter() {
                path.push(Seg::Key(k.as_str().to_string()));
                let value = to_json(v, path, scalar);
                path.pop();
                out.insert(k.as_str().to_string(), value?);
            }
            Value::Object(out)
        }
    })
}

/// The span of the deepest node along `path`; with `key`, the span of that key
/// in the mapping found there.
pub fn locate(root: &Node, path: &[Seg], key: Option<&str>) -> Option<Span> {
    let mut node = root;
    for seg in path {
        let next = match (seg, node) {
            (Seg::Key(k), Node::Mapping(m)) => m.get_node(k),
            (Seg::Index(i), Node::Sequence(s)) => s.get_node(*i),
            (Seg::Key(k), Node::Sequence(s)) => k.parse().ok().and_then(|i| s.get_node(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    if let (Some(key), Node::Mapping(m)) = (key, node) {
        if let Some(span) = key_span(m, key) {
            return Some(span);
        }
    }
    span_of(node)
}

pub fn key_span(map: &MarkedMappingNode, key: &str) -> Option<Span> {
    map.keys()
        .find(|k| k.as_str() == key)
        .and_then(|k| Span::from_marked(k.span()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_follow_the_core_schema() {
        let node = parse(0, "a: 3\nb: '3'\nc: true\nd: 1.5\ne: x\nf:\n").unwrap();
        let v = to_json(&node, &mut Vec::new(), &mut |s, _| Ok(scalar_value(s))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 3, "b": "3", "c": true, "d": 1.5, "e": "x", "f": null})
        );
    }

    #[test]
    fn second_documents_are_refused_with_their_line() {
        let err = parse(0, "a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.span.unwrap().line, 2);
    }

    #[test]
    fn locate_finds_keys_and_items() {
        let node = parse(0, "agents:\n  x:\n    tools:\n      - type: custom\n").unwrap();
        let path = vec![
            Seg::Key("agents".into()),
            Seg::Key("x".into()),
            Seg::Key("tools".into()),
            Seg::Index(0),
        ];
        let span = locate(&node, &path, Some("type")).unwrap();
        assert_eq!((span.line, span.column), (4, 9));
    }
}

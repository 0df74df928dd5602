//! Resource addresses and the dependency graph between resources.
//!
//! It owns addresses (`agent.coder`), references, cycle detection and the
//! topological order; it must not know about manifests' syntax or HTTP.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde::{Deserialize, Serialize};

/// The kinds of resource a manifest declares, in the order they are usually created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Environment,
    Agent,
    Session,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Environment, Kind::Agent, Kind::Session];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Environment => "environment",
            Kind::Agent => "agent",
            Kind::Session => "session",
        }
    }

    /// The manifest's top-level key for this kind.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Environment => "environments",
            Kind::Agent => "agents",
            Kind::Session => "sessions",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Kind::Agent),
            "environment" => Ok(Kind::Environment),
            "session" => Ok(Kind::Session),
            other => Err(format!(
                "unknown resource kind `{other}`; expected `agent`, `environment` or `session`"
            )),
        }
    }
}

/// `KIND.NAME`, e.g. `agent.coder`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub kind: Kind,
    pub name: String,
}

impl Address {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Address {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s.split_once('.').ok_or_else(|| {
            format!("`{s}` is not an address; write KIND.NAME, e.g. `agent.coder`")
        })?;
        let kind = kind.parse::<Kind>()?;
        if !valid_name(name) {
            return Err(format!(
                "`{name}` is not a valid resource name; use letters, digits, `_` and `-`"
            ));
        }
        Ok(Address::new(kind, name))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Resource names: what fits in an address and a template expression.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 128
}

/// A dependency cycle, in order, first node repeated at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle(pub Vec<Address>);

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|a| a.to_string()).collect();
        f.write_str(&parts.join(" → "))
    }
}

/// Resources and their dependencies; an edge runs from a dependency to its dependent.
#[derive(Debug, Default)]
pub struct ResourceGraph {
    graph: DiGraph<Address, ()>,
    index: HashMap<Address, NodeIndex>,
}

impl ResourceGraph {
    /// Builds the graph; dependencies on addresses not in `nodes` are ignored
    /// (the manifest reports those as dangling before it gets here).
    pub fn build<'a>(
        nodes: impl IntoIterator<Item = (&'a Address, &'a [Address])>,
    ) -> Result<Self, Cycle> {
        let nodes: Vec<_> = nodes.into_iter().collect();
        let mut g = ResourceGraph::default();
        for (addr, _) in &nodes {
            let ix = g.graph.add_node((*addr).clone());
            g.index.insert((*addr).clone(), ix);
        }
        for (addr, deps) in &nodes {
            let to = g.index[*addr];
            for dep in deps.iter() {
                if let Some(&from) = g.index.get(dep) {
                    g.graph.update_edge(from, to, ());
                }
            }
        }
        if let Some(cycle) = g.find_cycle() {
            return Err(cycle);
        }
        Ok(g)
    }

    fn find_cycle(&self) -> Option<Cycle> {
        if toposort(&self.graph, None).is_ok() {
            return None;
        }
        let mut sccs = tarjan_scc(&self.graph);
        sccs.sort_by_key(|scc| scc.iter().map(|ix| self.graph[*ix].clone()).min());
        for scc in sccs {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            // Walk the component from its smallest member until it returns.
            let members: std::collections::HashSet<_> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|ix| self.graph[**ix].clone())?;
            let mut path = vec![start];
            let mut current = start;
            loop {
                let mut next: Vec<_> = self
                    .graph
                    .neighbors_directed(current, Direction::Outgoing)
                    .filter(|n| members.contains(n))
                    .collect();
                next.sort_by_key(|ix| self.graph[*ix].clone());
                let n = *next
                    .iter()
                    .find(|n| **n == start || !path.contains(n))
                    .or(next.first())?;
                path.push(n);
                if n == start || path.len() > members.len() + 1 {
                    break;
                }
                current = n;
            }
            return Some(Cycle(
                path.into_iter().map(|ix| self.graph[ix].clone()).collect(),
            ));
        }
        None
    }

    /// Every address, dependencies before dependents.
    pub fn topological(&self) -> Vec<Address> {
        match toposort(&self.graph, None) {
            Ok(order) => order.into_iter().map(|ix| self.graph[ix].clone()).collect(),
            Err(_) => unreachable!("cycles are rejected when the graph is built"),
        }
    }

    pub fn contains(&self, addr: &Address) -> bool {
        self.index.contains_key(addr)
    }

    pub fn dependencies(&self, addr: &Address) -> Vec<Address> {
        self.neighbors(addr, Direction::Incoming)
    }

    pub fn dependents(&self, addr: &Address) -> Vec<Address> {
        self.neighbors(addr, Direction::Outgoing)
    }

    fn neighbors(&self, addr: &Address, dir: Direction) -> Vec<Address> {
        let Some(&ix) = self.index.get(addr) else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .graph
            .neighbors_directed(ix, dir)
            .map(|n| self.graph[n].clone())
            .collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_parse_and_print() {
        assert_eq!(a("agent.coder").to_string(), "agent.coder");
        assert!("agent".parse::<Address>().is_err());
        assert!("robot.x".parse::<Address>().is_err());
        assert!("agent.bad name".parse::<Address>().is_err());
    }

    #[test]
    fn orders_dependencies_first() {
        let s = a("session.s");
        let ag = a("agent.x");
        let e = a("environment.e");
        let deps_s = [ag.clone(), e.clone()];
        let g = ResourceGraph::build([(&s, &deps_s[..]), (&ag, &[][..]), (&e, &[][..])]).unwrap();
        let order = g.topological();
        let pos = |x: &Address| order.iter().position(|o| o == x).unwrap();
        assert!(pos(&ag) < pos(&s) && pos(&e) < pos(&s));
        assert_eq!(g.dependents(&ag), vec![s.clone()]);
    }

    #[test]
    fn reports_the_cycle_in_order() {
        let x = a("agent.x");
        let y = a("agent.y");
        let dx = [y.clone()];
        let dy = [x.clone()];
        let err = ResourceGraph::build([(&x, &dx[..]), (&y, &dy[..])]).unwrap_err();
        assert_eq!(err.to_string(), "agent.x → agent.y → agent.x");
    }
}

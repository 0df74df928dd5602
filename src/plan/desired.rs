//! The configuration a resource should have, given what is known of the
//! outputs it refers to. Shared by the planner (outputs from the state) and the
//! executor (outputs of the actions that just ran).

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::digest::digest;
use crate::graph::{Address, Kind};
use crate::manifest::{Deferred, Resource, SessionTarget, Templater};
use crate::state::ResourceRecord;

pub const UNKNOWN: &str = "(known after apply)";
pub const SENSITIVE: &str = "(sensitive)";

/// Outputs of a resource, each `None` while unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    pub id: Option<String>,
    pub version: Option<u64>,
    pub name: Option<String>,
}

impl Outputs {
    pub fn from_record(r: &ResourceRecord) -> Self {
        Outputs {
            id: Some(r.remote_id.clone()),
            version: r.version,
            name: r
                .config
                .get("name")
                .and_then(Value::as_str)
                .map(String::from),
        }
    }

    fn get(&self, attribute: &str) -> Option<Value> {
        match attribute {
            "id" => self.id.clone().map(Value::String),
            "version" => self.version.map(Value::from),
            "name" => self.name.clone().map(Value::String),
            _ => None,
        }
    }

    pub fn to_map(&self) -> BTreeMap<String, Value> {
        ["id", "version", "name"]
            .iter()
            .filter_map(|a| self.get(a).map(|v| (a.to_string(), v)))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// With real values; unknown ones hold [`UNKNOWN`].
    pub config: Value,
    /// JSON pointers whose values are known only after apply.
    pub unknown: Vec<String>,
    /// JSON pointer → sha256 of each value that came from `env()`.
    pub sensitive: BTreeMap<String, String>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{address}: {message}")]
pub struct DesiredError {
    pub address: Address,
    pub message: String,
}

impl Desired {
    pub fn is_known(&self) -> bool {
        self.unknown.is_empty()
    }

    /// The digest of a fully known configuration.
    pub fn digest(&self) -> Option<String> {
        self.is_known().then(|| digest(&self.config))
    }

    /// What may be written to the state: sensitive values replaced.
    pub fn stored_config(&self) -> Value {
        let mut v = self.config.clone();
        for pointer in self.sensitive.keys() {
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = Value::String(SENSITIVE.into());
            }
        }
        v
    }
}

/// Computes the desired configuration of `resource`; `outputs` tells what is
/// known of other resources.
pub fn desired(
    resource: &Resource,
    templater: &Templater,
    outputs: &dyn Fn(&Address) -> Option<Outputs>,
) -> Result<Desired, DesiredError> {
    let mut want = Desired {
        config: resource.body.clone(),
        unknown: Vec::new(),
        sensitive: BTreeMap::new(),
    };
    for d in &resource.deferred {
        render_deferred(&mut want, d, templater, outputs).map_err(|message| DesiredError {
            address: resource.address.clone(),
            message,
        })?;
    }
    for pointer in &resource.sensitive {
        if let Some(v) = want.config.pointer(pointer) {
            want.sensitive.insert(pointer.clone(), digest(v));
        }
    }
    if resource.address.kind == Kind::Session {
        let target = resource.session.as_ref().ok_or_else(|| DesiredError {
            address: resource.address.clone(),
            message: "session without a target".into(),
        })?;
        session_config(&mut want, target, outputs);
    }
    want.unknown.sort();
    want.unknown.dedup();
    Ok(want)
}

/// Renders one deferred string when every output it refers to is known;
/// otherwise marks it unknown.
fn render_deferred(
    want: &mut Desired,
    d: &Deferred,
    templater: &Templater,
    outputs: &dyn Fn(&Address) -> Option<Outputs>,
) -> Result<(), String> {
    let mut context = serde_json::Map::new();
    let mut known = true;
    for r in &d.references {
        match outputs(&r.address).and_then(|o| o.get(&r.attribute)) {
            Some(v) => {
                let kind = context
                    .entry(r.address.kind.as_str())
                    .or_insert_with(|| Value::Object(Default::default()));
                let entry = kind.as_object_mut().map(|m| {
                    m.entry(r.address.name.clone())
                        .or_insert_with(|| Value::Object(Default::default()))
                });
                if let Some(Value::Object(obj)) = entry {
                    obj.insert(r.attribute.clone(), v);
                }
            }
            None => known = false,
        }
    }
    let value = if known {
        let (v, secret) = templater
            .render_with(&d.template, &Value::Object(context))
            .map_err(|e| format!("template `{}` failed: {}", d.template, e.message))?;
        if secret {
            want.sensitive.insert(d.pointer.clone(), digest(&v));
        }
        v
    } else {
        want.unknown.push(d.pointer.clone());
        Value::String(UNKNOWN.into())
    };
    if let Some(slot) = want.config.pointer_mut(&d.pointer) {
        *slot = value;
    }
    Ok(())
}

/// A session's configuration: its agent (id, version, pinned) and
/// environment id in place of their names, with the fields it is created with.
fn session_config(
    want: &mut Desired,
    target: &SessionTarget,
    outputs: &dyn Fn(&Address) -> Option<Outputs>,
) {
    let agent = outputs(&target.agent).unwrap_or_default();
    let env = outputs(&target.environment).unwrap_or_default();
    let unknown = &mut want.unknown;
    let mut known_or = |v: Option<Value>, pointer: &str| {
        v.unwrap_or_else(|| {
            unknown.push(pointer.to_string());
            Value::String(UNKNOWN.into())
        })
    };
    let agent_id = known_or(agent.id.map(Value::String), "/agent/id");
    let version = known_or(
        target.version.or(agent.version).map(Value::from),
        "/agent/version",
    );
    let environment_id = known_or(env.id.map(Value::String), "/environment_id");
    let mut obj = serde_json::Map::new();
    obj.insert(
        "agent".into(),
        serde_json::json!({ "id": agent_id, "version": version, "pinned": target.version.is_some() }),
    );
    obj.insert("environment_id".into(), environment_id);
    for key in ["title", "metadata"].iter().chain(&SESSION_REPLACE_FIELDS) {
        if let Some(v) = want.config.get(*key) {
            obj.insert((*key).into(), v.clone());
        }
    }
    // A repository token is a secret wherever it came from.
    if let Some(resources) = obj.get("resources").and_then(Value::as_array) {
        for (i, r) in resources.iter().enumerate() {
            if let Some(token) = r.get("authorization_token") {
                want.sensitive
                    .insert(format!("/resources/{i}/authorization_token"), digest(token));
            }
        }
    }
    // Deferred pointers were relative to the session spec; they keep their
    // paths because title and metadata sit at the same place.
    want.config = Value::Object(obj);
}

/// The API body that creates a session from its desired configuration.
pub fn session_create_body(config: &Value) -> Value {
    let agent = &config["agent"];
    let agent_ref = if agent["pinned"].as_bool() == Some(true) {
        serde_json::json!({"type": "agent", "id": agent["id"], "version": agent["version"]})
    } else {
        agent["id"].clone()
    };
    let mut body = serde_json::json!({
        "agent": agent_ref,
        "environment_id": config["environment_id"],
    });
    for key in ["title", "metadata"].iter().chain(&SESSION_REPLACE_FIELDS) {
        if let Some(v) = config.get(*key) {
            body[*key] = v.clone();
        }
    }
    body
}

/// Session fields set at creation that agentform does not change in place:
/// a change replaces the session. The manifest leaves them out when empty.
pub(crate) const SESSION_REPLACE_FIELDS: [&str; 2] = ["resources", "vault_ids"];

//! The API's rules for environments: unique names among those not
//! archived, a config resolved with every field (networking, every package
//! manager's list), updates that keep what they omit and never change the
//! config's type, archival and deletion.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::super::body::{
    as_object, body_object, boolean, check_keys, field, invalid, nonempty_str, one_of,
    optional_str, present, required, string_list,
};
use super::super::ids::{new_id, timestamp, ENVIRONMENT_PREFIX};
use super::super::store::{write_lock, Records};
use super::metadata;
use crate::api::environment::{CloudConfig, LimitedNetwork};
use crate::api::limits::PACKAGE_MANAGERS;
use crate::api::{
    Deleted, Environment, EnvironmentConfig, ErrorKind, Networking, Packages, Result, RuntimeError,
};

const KEYS: [&str; 5] = ["name", "config", "description", "metadata", "scope"];

pub fn create(records: &Records, body: &Value) -> Result<Environment> {
    let body = body_object(body)?;
    check_keys(body, "", &KEYS)?;
    let name = nonempty_str(required(body, "", "name")?, "name")?;
    let config = match present(body, "config") {
        None => default_config(),
        Some(v) => resolve_config(v, None)?,
    };
    let description = optional_str(body, "", "description")?;
    let metadata = match body.get("metadata") {
        None => BTreeMap::new(),
        Some(v) => metadata::parse(v, "metadata")?,
    };
    let scope = optional_scope(body)?;

    let _guard = write_lock();
    check_name_free(records, name, None)?;
    let now = timestamp();
    let environment = Environment {
        id: new_id(ENVIRONMENT_PREFIX),
        archived_at: None,
        config,
        created_at: now.clone(),
        description,
        metadata,
        name: name.to_owned(),
        kind: "environment".to_owned(),
        updated_at: now,
        scope,
    };
    records.put_environment(&environment)?;
    Ok(environment)
}

pub fn update(records: &Records, id: &str, body: &Value) -> Result<Environment> {
    let body = body_object(body)?;
    check_keys(body, "", &KEYS)?;

    let _guard = write_lock();
    let current = records.environment(id)?;
    if current.archived_at.is_some() {
        return Err(invalid(format!("environment `{id}` is archived")));
    }
    let mut next = current.clone();
    if let Some(name) = present(body, "name") {
        let name = nonempty_str(name, "name")?;
        if name != current.name {
            check_name_free(records, name, Some(id))?;
        }
        name.clone_into(&mut next.name);
    }
    if let Some(config) = present(body, "config") {
        next.config = resolve_config(config, Some(&current.config))?;
    }
    if body.contains_key("description") {
        next.description = optional_str(body, "", "description")?;
    }
    if let Some(metadata) = body.get("metadata") {
        next.metadata = metadata::patch(&current.metadata, metadata, "metadata", true)?;
    }
    if let Some(scope) = optional_scope(body)? {
        next.scope = Some(scope);
    }
    if next == current {
        return Ok(current);
    }
    next.updated_at = timestamp();
    records.put_environment(&next)?;
    Ok(next)
}

pub fn archive(records: &Records, id: &str) -> Result<Environment> {
    let _guard = write_lock();
    let mut environment = records.environment(id)?;
    if environment.archived_at.is_none() {
        environment.archived_at = Some(timestamp());
        records.put_environment(&environment)?;
    }
    Ok(environment)
}

pub fn delete(records: &Records, id: &str) -> Result<Deleted> {
    let _guard = write_lock();
    if !records.remove_environment(id)? {
        return Err(RuntimeError::not_found("environment", id));
    }
    Ok(Deleted {
        id: id.to_owned(),
        kind: "environment_deleted".to_owned(),
    })
}

/// Names are unique among environments that are not archived.
fn check_name_free(records: &Records, name: &str, except: Option<&str>) -> Result<()> {
    for other in records.environments() {
        let other = other?;
        if other.archived_at.is_none() && other.name == name && Some(other.id.as_str()) != except {
            return Err(RuntimeError::new(
                ErrorKind::Conflict,
                format!(
                    "environment name `{name}` is already used by `{}`",
                    other.id
                ),
            ));
        }
    }
    Ok(())
}

fn optional_scope(body: &Map<String, Value>) -> Result<Option<String>> {
    present(body, "scope")
        .map(|v| one_of(v, "scope", &["organization", "account"]).map(str::to_owned))
        .transpose()
}

/// A cloud config with unrestricted networking and no packages.
pub fn default_config() -> EnvironmentConfig {
    EnvironmentConfig::Cloud(CloudConfig {
        networking: Networking::Unrestricted,
        packages: Packages::default(),
    })
}

/// A config with every field resolved; on update (`stored` given) omitted
/// fields keep their stored values and the type cannot change.
fn resolve_config(value: &Value, stored: Option<&EnvironmentConfig>) -> Result<EnvironmentConfig> {
    let path = "config";
    let map = as_object(value, path)?;
    let kind = one_of(
        required(map, path, "type")?,
        "config.type",
        &["cloud", "self_hosted"],
    )?;
    if let Some(stored) = stored {
        let stored_kind = stored.kind();
        if stored_kind != kind {
            return Err(invalid(format!(
                "`config.type`: cannot change from `{stored_kind}` to `{kind}` after creation"
            )));
        }
    }
    if kind == "self_hosted" {
        check_keys(map, path, &["type"])?;
        return Ok(EnvironmentConfig::SelfHosted);
    }
    check_keys(map, path, &["type", "networking", "packages"])?;
    let stored = match stored {
        Some(EnvironmentConfig::Cloud(cloud)) => Some(cloud),
        _ => None,
    };
    let stored_networking = stored.map(|s| &s.networking);
    let networking = match present(map, "networking") {
        None => stored_networking
            .cloned()
            .unwrap_or(Networking::Unrestricted),
        Some(v) => resolve_networking(v, stored_networking)?,
    };
    let stored_packages = stored.map(|s| &s.packages);
    let packages = match present(map, "packages") {
        None => stored_packages.cloned().unwrap_or_default(),
        Some(v) => resolve_packages(v, stored_packages)?,
    };
    let limited_without_managers =
        matches!(&networking, Networking::Limited(l) if !l.allow_package_managers);
    let has_packages = PACKAGE_MANAGERS
        .iter()
        .any(|m| packages.list(m).is_some_and(|l| !l.is_empty()));
    if limited_without_managers && has_packages {
        return Err(invalid(
            "`config.packages`: limited networking needs `allow_package_managers: true`",
        ));
    }
    Ok(EnvironmentConfig::Cloud(CloudConfig {
        networking,
        packages,
    }))
}

fn resolve_networking(value: &Value, stored: Option<&Networking>) -> Result<Networking> {
    let path = "config.networking";
    let map = as_object(value, path)?;
    let kind = one_of(
        required(map, path, "type")?,
        "config.networking.type",
        &["unrestricted", "limited"],
    )?;
    if kind == "unrestricted" {
        check_keys(map, path, &["type"])?;
        return Ok(Networking::Unrestricted);
    }
    check_keys(
        map,
        path,
        &[
            "type",
            "allow_mcp_servers",
            "allow_package_managers",
            "allowed_hosts",
        ],
    )?;
    let stored = match stored {
        Some(Networking::Limited(limited)) => Some(limited),
        _ => None,
    };
    let allow_mcp_servers = match present(map, "allow_mcp_servers") {
        Some(v) => boolean(v, &field(path, "allow_mcp_servers"))?,
        None => stored.is_some_and(|s| s.allow_mcp_servers),
    };
    let allow_package_managers = match present(map, "allow_package_managers") {
        Some(v) => boolean(v, &field(path, "allow_package_managers"))?,
        None => stored.is_some_and(|s| s.allow_package_managers),
    };
    let allowed_hosts = match present(map, "allowed_hosts") {
        Some(v) => string_list(v, "config.networking.allowed_hosts")?,
        None => stored.map(|s| s.allowed_hosts.clone()).unwrap_or_default(),
    };
    Ok(Networking::Limited(LimitedNetwork {
        allow_mcp_servers,
        allow_package_managers,
        allowed_hosts,
    }))
}

fn resolve_packages(value: &Value, stored: Option<&Packages>) -> Result<Packages> {
    let path = "config.packages";
    let map = as_object(value, path)?;
    let mut allowed = PACKAGE_MANAGERS.to_vec();
    allowed.push("type");
    check_keys(map, path, &allowed)?;
    if let Some(kind) = present(map, "type") {
        one_of(kind, "config.packages.type", &["packages"])?;
    }
    let mut packages = Packages::default();
    for manager in PACKAGE_MANAGERS {
        let list = match present(map, manager) {
            Some(v) => string_list(v, &field(path, manager))?,
            None => stored
                .and_then(|s| s.list(manager))
                .cloned()
                .unwrap_or_default(),
        };
        if let Some(slot) = packages.list_mut(manager) {
            *slot = list;
        }
    }
    Ok(packages)
}

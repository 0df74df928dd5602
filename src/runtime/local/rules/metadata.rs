//! The API's metadata rules: string pairs within the documented limits, set
//! on create and patched on update.

use std::collections::BTreeMap;

use serde_json::Value;

use super::super::body::{as_object, expected, invalid, string};
use crate::api::limits::{MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE};
use crate::api::Result;

pub fn parse(value: &Value, path: &str) -> Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    for (key, v) in as_object(value, path)? {
        let s = string(v, &format!("{path}.{key}"))?;
        metadata.insert(key.clone(), s.to_owned());
    }
    check(&metadata, path)?;
    Ok(metadata)
}

/// A metadata PATCH: strings upsert, null (and "" when `empty_deletes`)
/// deletes; a null patch changes nothing.
pub fn patch(
    base: &BTreeMap<String, String>,
    patch: &Value,
    path: &str,
    empty_deletes: bool,
) -> Result<BTreeMap<String, String>> {
    let mut metadata = base.clone();
    if patch.is_null() {
        return Ok(metadata);
    }
    for (key, v) in as_object(patch, path)? {
        match v {
            Value::Null => {
                metadata.remove(key);
            }
            Value::String(s) if s.is_empty() && empty_deletes => {
                metadata.remove(key);
            }
            Value::String(s) => {
                metadata.insert(key.clone(), s.clone());
            }
            other => {
                return Err(expected(
                    &format!("{path}.{key}"),
                    "a string or null",
                    other,
                ))
            }
        }
    }
    check(&metadata, path)?;
    Ok(metadata)
}

fn check(metadata: &BTreeMap<String, String>, path: &str) -> Result<()> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(invalid(format!(
            "`{path}`: at most {MAX_METADATA_PAIRS} pairs are allowed, got {}",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_METADATA_KEY {
            return Err(invalid(format!(
                "`{path}`: key `{key}` must be 1 to {MAX_METADATA_KEY} characters"
            )));
        }
        if value.chars().count() > MAX_METADATA_VALUE {
            return Err(invalid(format!(
                "`{path}.{key}`: value must be at most {MAX_METADATA_VALUE} characters"
            )));
        }
    }
    Ok(())
}

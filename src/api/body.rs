//! Path-aware readers of a JSON request body: each failure is an
//! `invalid_request_error` naming the field (`tools[0].name: required`), in
//! the API's words.
//!
//! Generic: no rule of a particular object lives here (the local runtime's
//! `rules/` and the engine's checks of sent events use these).

use serde_json::{Map, Value};

use crate::api::{Result, RuntimeError};

pub fn invalid(message: impl Into<String>) -> RuntimeError {
    RuntimeError::invalid(message)
}

/// `path.key`, or `key` at the top.
pub fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn expected(path: &str, what: &str, got: &Value) -> RuntimeError {
    invalid(format!("`{path}`: expected {what}, got {}", type_name(got)))
}

pub fn body_object(body: &Value) -> Result<&Map<String, Value>> {
    body.as_object().ok_or_else(|| {
        invalid(format!(
            "request body: expected an object, got {}",
            type_name(body)
        ))
    })
}

pub fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| expected(path, "an object", value))
}

pub fn array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>> {
    value
        .as_array()
        .ok_or_else(|| expected(path, "an array", value))
}

/// Rejects fields the API does not know, as it does.
pub fn check_keys(map: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(invalid(format!("`{}`: unknown field", field(path, key)))),
    }
}

/// The value of `key`, treating null like absence.
pub fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub fn required<'a>(map: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a Value> {
    present(map, key).ok_or_else(|| invalid(format!("`{}`: required", field(path, key))))
}

pub fn string<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| expected(path, "a string", value))
}

/// A string of 1 to `max` characters.
pub fn bounded_str<'a>(value: &'a Value, path: &str, max: usize) -> Result<&'a str> {
    let s = string(value, path)?;
    let len = s.chars().count();
    if len == 0 {
        return Err(invalid(format!("`{path}`: must not be empty")));
    }
    if len > max {
        return Err(invalid(format!(
            "`{path}`: must be at most {max} characters"
        )));
    }
    Ok(s)
}

/// A non-empty string of any length.
pub fn nonempty_str<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    bounded_str(value, path, usize::MAX)
}

pub fn one_of<'a>(value: &'a Value, path: &str, allowed: &[&str]) -> Result<&'a str> {
    let s = string(value, path)?;
    if allowed.contains(&s) {
        Ok(s)
    } else {
        Err(invalid(format!(
            "`{path}`: expected one of {}, got `{s}`",
            allowed.join(", ")
        )))
    }
}

/// One of `allowed`, as the typed value `parse` gives for it.
pub fn one_of_as<T>(
    value: &Value,
    path: &str,
    allowed: &[&str],
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let s = one_of(value, path, allowed)?;
    parse(s).ok_or_else(|| {
        invalid(format!(
            "`{path}`: expected one of {}, got `{s}`",
            allowed.join(", ")
        ))
    })
}

pub fn boolean(value: &Value, path: &str) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| expected(path, "a boolean", value))
}

pub fn positive_int(value: &Value, path: &str) -> Result<u64> {
    value
        .as_u64()
        .filter(|n| *n >= 1)
        .ok_or_else(|| expected(path, "an integer ≥ 1", value))
}

/// An optional string field; absent or null give `None`.
pub fn optional_str(map: &Map<String, Value>, path: &str, key: &str) -> Result<Option<String>> {
    present(map, key)
        .map(|v| string(v, &field(path, key)).map(str::to_owned))
        .transpose()
}

/// An array of non-empty strings.
pub fn string_list(value: &Value, path: &str) -> Result<Vec<String>> {
    array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| nonempty_str(v, &format!("{path}[{i}]")).map(str::to_owned))
        .collect()
}

/// A text field on create/update: omitted keeps `base`; null or "" clears.
pub fn clearable_text(
    body: &Map<String, Value>,
    key: &str,
    base: Option<String>,
) -> Result<Option<String>> {
    match body.get(key) {
        None => Ok(base),
        Some(Value::Null) => Ok(None),
        Some(v) => {
            let s = string(v, key)?;
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
    }
}

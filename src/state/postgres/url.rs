//! `postgres://user:pass@host:port/db?sslmode=…&schema=…`: parsed, shown
//! without its password, and the password found where libpq looks for it
//! (the URL, `PGPASSWORD`, the `.pgpass` file).
//!
//! The password is held only here and handed to the connection; it is
//! never part of a message, a log line or anything stored.

use std::path::PathBuf;

/// The schema a state uses unless the URL names one.
pub const DEFAULT_SCHEMA: &str = "agentform";

/// How the connection is encrypted (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it (libpq's default).
    Prefer,
    /// TLS, whatever the server's certificate.
    Require,
    /// TLS, the server's certificate checked against the web's roots and
    /// its host name (`verify-ca` and `verify-full`).
    VerifyFull,
}

/// A PostgreSQL state's address.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: Option<String>,
    password: Option<String>,
    pub host: String,
    pub port: u16,
    pub dbname: Option<String>,
    pub sslmode: SslMode,
    pub schema: String,
    pub connect_timeout: std::time::Duration,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

/// Whether `text` names a PostgreSQL state rather than a directory.
pub fn is_postgres(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl PgUrl {
    /// Parses a URL; the error says what is wrong without repeating it
    /// (it may hold a password).
    pub fn parse(text: &str) -> Result<PgUrl, String> {
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or("a PostgreSQL state starts with `postgres://`")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (Some(decode(u)?), Some(decode(p)?)),
                None => (Some(decode(info)?), None),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        let mut url = PgUrl {
            user: user.filter(|u| !u.is_empty()),
            password,
            host,
            port,
            dbname: match path {
                Some(p) if !p.is_empty() => Some(decode(p)?),
                _ => None,
            },
            sslmode: SslMode::Prefer,
            schema: DEFAULT_SCHEMA.to_string(),
            connect_timeout: std::time::Duration::from_secs(10),
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value)?;
            match key {
                "sslmode" => {
                    url.sslmode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" | "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "`sslmode={other}` is not one of disable, prefer, require, \
                                 verify-full"
                            ))
                        }
                    }
                }
                "schema" => {
                    if !is_identifier(&value) {
                        return Err(format!(
                            "`schema={value}` is not a plain name (letters, digits and `_`, \
                             not starting with a digit, at most 63)"
                        ));
                    }
                    url.schema = value;
                }
                "connect_timeout" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| format!("`connect_timeout={value}` is not whole seconds"))?;
                    url.connect_timeout = std::time::Duration::from_secs(secs.max(1));
                }
                "user" => url.user = Some(value),
                "password" => url.password = Some(value),
                "dbname" => url.dbname = Some(value),
                "application_name" => {}
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`; known: sslmode, schema, connect_timeout, \
                         user, password, dbname"
                    ))
                }
            }
        }
        Ok(url)
    }

    /// The user, from the URL, `PGUSER` or the login name.
    pub fn user_or_default(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        self.user
            .clone()
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".to_string())
    }

    /// The database, from the URL, `PGDATABASE` or the user's name.
    pub fn dbname_or_default(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        self.dbname
            .clone()
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| self.user_or_default(env))
    }

    /// The password: from the URL, else `PGPASSWORD`, else the first
    /// matching line of the password file (`PGPASSFILE`, or `~/.pgpass`).
    pub(super) fn password(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        if let Some(p) = env("PGPASSWORD") {
            return Some(p);
        }
        let file = env("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
        let text = std::fs::read_to_string(file).ok()?;
        let user = self.user_or_default(env);
        let db = self.dbname_or_default(env);
        pgpass_lookup(&text, &self.host, self.port, &db, &user)
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The URL without its password (and without parameters that only tune
/// the connection): what messages show.
impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("postgres://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        f.write_str(&self.server())?;
        if let Some(db) = &self.dbname {
            write!(f, "/{db}")?;
        }
        if self.schema != DEFAULT_SCHEMA {
            write!(f, "?schema={}", self.schema)?;
        }
        Ok(())
    }
}

fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 host needs its closing `]`")?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => 5432,
        Some(p) => p
            .parse()
            .map_err(|_| format!("the port `{p}` is not a number"))?,
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        decode(&host)?
    };
    Ok((host, port))
}

/// Percent-decoding; an invalid escape is an error.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` escape in the URL is not two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL decodes to invalid UTF-8".to_string())
}

/// A name used unquoted in SQL.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The password of the first line of a `.pgpass` file that matches
/// (`host:port:db:user:password`, `*` for any, `\:` and `\\` escaped).
fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        let [h, p, d, u, password] = fields.as_slice() else {
            continue;
        };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        let host_matches = matches(h, host) || (h == "localhost" && host == "127.0.0.1");
        if host_matches && matches(p, &port) && matches(d, db) && matches(u, user) {
            return Some(password.clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_full_url_is_parsed_and_shown_without_its_password() {
        let url = PgUrl::parse(
            "postgres://ci%40team:s3cr%3At@db.example.com:6543/agents?sslmode=require&schema=proj_a",
        )
        .unwrap();
        assert_eq!(url.user.as_deref(), Some("ci@team"));
        assert_eq!(url.password(&none).as_deref(), Some("s3cr:t"));
        assert_eq!(url.host, "db.example.com");
        assert_eq!(url.port, 6543);
        assert_eq!(url.dbname.as_deref(), Some("agents"));
        assert_eq!(url.sslmode, SslMode::Require);
        assert_eq!(url.schema, "proj_a");
        let shown = url.to_string();
        assert_eq!(
            shown,
            "postgres://ci@team@db.example.com:6543/agents?schema=proj_a"
        );
        assert!(!format!("{url:?}").contains("s3cr"));
    }

    #[test]
    fn defaults_and_bad_urls() {
        let url = PgUrl::parse("postgresql://localhost").unwrap();
        assert_eq!((url.port, url.schema.as_str()), (5432, DEFAULT_SCHEMA));
        assert_eq!(url.sslmode, SslMode::Prefer);
        assert_eq!(
            url.dbname_or_default(&|k| (k == "USER").then(|| "me".into())),
            "me"
        );
        for bad in [
            "postgres://h:port/db",
            "postgres://h/db?sslmode=sometimes",
            "postgres://h/db?schema=Bad-Name",
            "postgres://h/db?colour=red",
            "postgres://u:%zz@h/db",
        ] {
            let err = PgUrl::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(PgUrl::parse("postgres://u:pw@[::1]:7/db").is_ok_and(|u| u.host == "::1"));
    }

    #[test]
    fn the_password_comes_from_the_environment_or_the_pgpass_file() {
        let url = PgUrl::parse("postgres://app@db:5433/st").unwrap();
        let env = |k: &str| (k == "PGPASSWORD").then(|| "from-env".to_string());
        assert_eq!(url.password(&env).as_deref(), Some("from-env"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\ndb:5433:st:app:pa\\:ss\n*:*:*:*:fallback\n",
        )
        .unwrap();
        let path = file.display().to_string();
        let env = move |k: &str| (k == "PGPASSFILE").then(|| path.clone());
        assert_eq!(url.password(&env).as_deref(), Some("pa:ss"));
    }
}

//! Where events are kept: a SQLite file (the default), or a Postgres
//! database shared by a fleet of instances (`[fleet]`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::store::PostgresOptions;

/// The configuration's `store`: a SQLite file's path, or a `postgres://` /
/// `postgresql://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file (one `serve` process at a time).
    Sqlite(PathBuf),
    /// A Postgres database, `postgres://user@host:port/database`, without
    /// a password (any number of `serve` instances).
    Postgres(String),
}

impl StoreLocation {
    /// Reads the configuration's `store` value.
    ///
    /// # Errors
    ///
    /// What is wrong with a URL: not valid, or holding a password.
    ///
    /// ```
    /// use breakwater_dispatch::config::StoreLocation;
    ///
    /// assert_eq!(
    ///     StoreLocation::parse("events.db").unwrap(),
    ///     StoreLocation::Sqlite("events.db".into())
    /// );
    /// assert!(matches!(
    ///     StoreLocation::parse("postgres://bw@127.0.0.1:5432/app").unwrap(),
    ///     StoreLocation::Postgres(_)
    /// ));
    /// let err = StoreLocation::parse("postgres://bw:secret@127.0.0.1/app").unwrap_err();
    /// assert!(err.contains("password") && !err.contains("secret"));
    /// ```
    pub fn parse(value: &str) -> Result<Self, String> {
        if !PostgresOptions::is_url(value) {
            return Ok(Self::Sqlite(PathBuf::from(value)));
        }
        match value.parse::<tokio_postgres::Config>() {
            Err(e) => Err(format!(
                "not a valid Postgres URL ({e}); expected postgres://user@host:port/database"
            )),
            Ok(c) if c.get_password().is_some() => Err(
                "the URL holds a password: take it out and put it in the environment variable \
                 named by `store_password_env` (or PGPASSWORD)"
                    .into(),
            ),
            Ok(_) => Ok(Self::Postgres(value.to_string())),
        }
    }

    /// The SQLite file, if it is one.
    pub fn sqlite(&self) -> Option<&PathBuf> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => f.write_str(url),
        }
    }
}

/// `[fleet]`: this instance's place among the instances sharing one
/// Postgres database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// This instance's name, unique among live instances. Default: the
    /// host's name and the process id.
    pub instance: Option<String>,
    /// How long an instance's lease lasts without a heartbeat, on the
    /// database's clock, in milliseconds: a dead instance's claimed work is
    /// taken over by the others after this. Default 30000.
    pub lease_ms: u64,
    /// How often the lease is renewed, in milliseconds, less than
    /// `lease_ms`. Default 5000.
    pub heartbeat_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            instance: None,
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
        }
    }
}

/// What `store_password_env`, `store_schema` and `[fleet]` say, with the
/// URL, as the Postgres store takes them. The password is read from the
/// environment here: the variable `password_env` names, or `PGPASSWORD`.
///
/// # Errors
///
/// When `password_env` names a variable that is not set.
pub fn postgres_options(
    url: &str,
    password_env: Option<&str>,
    schema: &str,
    fleet: &FleetConfig,
) -> Result<PostgresOptions, String> {
    let password = match password_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            format!("store_password_env names {var}, which is not set in the environment")
        })?),
        None => std::env::var("PGPASSWORD").ok(),
    };
    let mut options = PostgresOptions::new(url);
    options.password = password;
    options.schema = schema.to_string();
    if let Some(instance) = &fleet.instance {
        options.instance.clone_from(instance);
    }
    options.lease = Duration::from_millis(fleet.lease_ms);
    options.heartbeat = Duration::from_millis(fleet.heartbeat_ms);
    Ok(options)
}

//! How to reach the database, and this instance's place in the fleet.

use std::time::Duration;

use crate::store::{StoreError, StoreResult};

/// How to reach the database, and this instance's place in the fleet.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database` (without a password).
    pub url: String,
    /// The password, from the environment (never from the file).
    pub password: Option<String>,
    /// The schema every table lives in: lowercase letters, digits and `_`,
    /// not starting with a digit.
    pub schema: String,
    /// This instance's name in the fleet (unique among live instances).
    pub instance: String,
    /// How long a lease lasts without a heartbeat: an instance silent this
    /// long has its claims taken over.
    pub lease: Duration,
    /// How often the lease is renewed (and expired ones taken over).
    pub heartbeat: Duration,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("schema", &self.schema)
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PostgresOptions {
    /// Options for `url` with the defaults: schema `breakwater`, this
    /// host's name and process id as the instance, a 30 s lease renewed
    /// every 5 s, 16 connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            schema: "breakwater".into(),
            instance: default_instance(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            pool_size: 16,
        }
    }

    /// Whether `store` names a Postgres database (a `postgres://` or
    /// `postgresql://` URL) rather than a SQLite file.
    pub fn is_url(store: &str) -> bool {
        store.starts_with("postgres://") || store.starts_with("postgresql://")
    }

    /// The driver's settings: the URL, the password, a 5 s connect timeout
    /// and the schema as the search path.
    pub(super) fn pg_config(&self) -> StoreResult<tokio_postgres::Config> {
        check_schema(&self.schema).map_err(StoreError::Backend)?;
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::Backend(format!("the store URL is not valid: {e}")))?;
        if config.get_password().is_some() {
            return Err(StoreError::Backend(
                "the store URL holds a password: take it out and give it in the environment \
                 (the variable `store_password_env` names, or PGPASSWORD)"
                    .into(),
            ));
        }
        if let Some(p) = &self.password {
            config.password(p.as_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("breakwater");
        // A session that stops mid-transaction (its process paused or
        // frozen) is ended by the server within half a lease, so its row
        // locks never outlast its lease; no statement waits long for a lock.
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        let idle_ms = (lease_ms / 2).clamp(1_000, 60_000);
        config.options(format!(
            "-c search_path={} -c client_min_messages=warning \
             -c idle_in_transaction_session_timeout={idle_ms} -c lock_timeout=10000",
            self.schema
        ));
        Ok(config)
    }
}

/// `hostname-pid`: unique among the instances of one machine.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "breakwater".into());
    format!("{host}-{}", std::process::id())
}

/// Checks that `schema` is a plain identifier (it is written into
/// statements as it is).
///
/// # Errors
///
/// What is wrong with it.
pub fn check_schema(schema: &str) -> Result<(), String> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || schema.len() > 63
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "{schema:?} is not a schema name breakwater accepts: lowercase letters, digits and \
             `_`, not starting with a digit, at most 63 characters"
        ));
    }
    Ok(())
}

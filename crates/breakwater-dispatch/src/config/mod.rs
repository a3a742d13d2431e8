//! The service's configuration file (TOML).
//!
//! Unknown keys are refused everywhere. [`Config::parse`] reports every
//! problem at once, each with its key path and line, so `check-config` can
//! list them all instead of stopping at the first.
//!
//! `store` is a SQLite file's path, or a Postgres URL shared by a fleet of
//! instances (the password from the environment, never the file):
//!
//! ```toml
//! store = "postgres://breakwater@127.0.0.1:5432/app"
//! store_password_env = "BREAKWATER_STORE_PASSWORD"
//! store_schema = "breakwater"
//! [fleet]
//! instance = "web-1"
//! lease_ms = 30000
//! heartbeat_ms = 5000
//! ```
//!
//! A whole file:
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! store = "breakwater.db"
//! admin_token_env = "BREAKWATER_ADMIN_TOKEN"
//! [circuit_breaker]            # defaults for every endpoint
//! sample_size = 20
//! [circuit_breaker.endpoints."http://127.0.0.1:9000"]
//! open_timeout_ms = 1000       # only what differs from the defaults above
//! [retry]
//! max_attempts = 5
//! backoff_ms = 200
//! [[observers]]
//! name = "order-created"
//! entity_type = "Order"
//! event_type = "INSERT"
//! [[observers.actions]]
//! type = "webhook"
//! url = "http://127.0.0.1:9000/hooks/orders"
//! ```

mod breaker;
mod observers;
mod problem;
mod sections;
mod store;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use breakwater::traits::ActionConfig;

use self::breaker::breaker_section;
pub use self::breaker::BreakerConfig;
use self::observers::observers;
pub use self::observers::Observer;
use self::problem::{line_at, Checker, Step};
pub use self::problem::{ConfigError, Problem};
pub use self::sections::{DeliveryConfig, HistoryConfig, HttpConfig, RetryConfig};
pub use self::store::{postgres_options, FleetConfig, StoreLocation};
use crate::store::postgres::check_schema;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Where events are kept: a SQLite file (default `breakwater.db`) or a
    /// Postgres URL.
    pub store: StoreLocation,
    /// Postgres only: the environment variable holding the database
    /// password (default: libpq's `PGPASSWORD`).
    pub store_password_env: Option<String>,
    /// Postgres only: the schema every table lives in. Default `breakwater`.
    pub store_schema: String,
    /// Postgres only: this instance's lease in the fleet.
    pub fleet: FleetConfig,
    /// Name of the environment variable holding the admin bearer token; the
    /// admin routes answer 401 when unset.
    pub admin_token_env: Option<String>,
    /// Name of the environment variable holding the bearer token `POST
    /// /events` requires; intake is open when unset.
    pub intake_token_env: Option<String>,
    /// Name of the environment variable holding the viewer token: it reads
    /// the console and the history routes (the admin token reads them too);
    /// when unset, only the admin token reads them.
    pub viewer_token_env: Option<String>,
    /// Breaker defaults, and overrides by endpoint (each merged over the
    /// defaults).
    pub circuit_breaker: BreakerConfig,
    /// How failed deliveries are retried.
    pub retry: RetryConfig,
    /// Delivery limits.
    pub delivery: DeliveryConfig,
    /// The HTTP listener's limits.
    pub http: HttpConfig,
    /// What is kept of every delivery attempt.
    pub history: HistoryConfig,
    /// Which events lead to which actions.
    pub observers: Vec<Observer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreLocation::Sqlite("breakwater.db".into()),
            store_password_env: None,
            store_schema: "breakwater".into(),
            fleet: FleetConfig::default(),
            admin_token_env: None,
            intake_token_env: None,
            viewer_token_env: None,
            circuit_breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            delivery: DeliveryConfig::default(),
            http: HttpConfig::default(),
            history: HistoryConfig::default(),
            observers: Vec::new(),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "store",
    "store_password_env",
    "store_schema",
    "fleet",
    "admin_token_env",
    "intake_token_env",
    "viewer_token_env",
    "circuit_breaker",
    "retry",
    "delivery",
    "http",
    "history",
    "observers",
];

/// The longest wait a configuration may ask for, in milliseconds: one year.
const MAX_WAIT_MS: u64 = 365 * 24 * 3600 * 1000;

impl Config {
    /// Parses and checks a configuration file's text.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] holding every problem found, each with its key path
    /// and line.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater_dispatch::config::Config;
    ///
    /// let config = Config::parse(r#"
    /// listen = "127.0.0.1:9999"
    /// [circuit_breaker]
    /// sample_size = 20
    /// [circuit_breaker.endpoints."http://127.0.0.1:9000"]
    /// open_timeout_ms = 1000
    /// "#).unwrap();
    /// let hook = config.circuit_breaker.for_endpoint("http://127.0.0.1:9000");
    /// assert_eq!((hook.sample_size, hook.open_timeout_ms), (20, 1000));
    ///
    /// let err = Config::parse("lisen = 1\n[retry]\nmax_attempts = 0\n").unwrap_err();
    /// let paths: Vec<_> = err.problems.iter().map(|p| (p.path.as_str(), p.line)).collect();
    /// assert_eq!(paths, [("lisen", Some(1)), ("retry.max_attempts", Some(3))]);
    /// ```
    pub fn parse(source: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = match toml::from_str(source) {
            Ok(t) => t,
            Err(e) => {
                return Err(ConfigError {
                    problems: vec![Problem {
                        path: "(file)".into(),
                        line: e.span().map(|s| line_at(source, s.start)),
                        message: e.message().trim().to_string(),
                    }],
                })
            }
        };
        let mut c = Checker {
            source,
            doc: toml_edit::Document::parse(source).ok(),
            problems: Vec::new(),
        };
        let mut config = Config::default();
        for key in table.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                c.problem(
                    &[Step::Key(key)],
                    format!("unknown key, expected one of {}", TOP_KEYS.join(", ")),
                );
            }
        }
        if let Some(v) = table.get("listen") {
            match v.as_str().map(str::parse::<SocketAddr>) {
                Some(Ok(addr)) => config.listen = addr,
                Some(Err(e)) => c.problem(
                    &[Step::Key("listen")],
                    format!("not a socket address ({e})"),
                ),
                None => c.problem(&[Step::Key("listen")], "expected a string \"ip:port\""),
            }
        }
        if let Some(v) = table.get("store") {
            match v.as_str() {
                Some(s) if !s.is_empty() => match StoreLocation::parse(s) {
                    Ok(l) => config.store = l,
                    Err(e) => c.problem(&[Step::Key("store")], e),
                },
                _ => c.problem(
                    &[Step::Key("store")],
                    "expected a non-empty path or a postgres:// URL",
                ),
            }
        }
        if let Some(v) = table.get("store_schema") {
            match v.as_str().map(|s| check_schema(s).map(|()| s)) {
                Some(Ok(s)) => config.store_schema = s.to_string(),
                Some(Err(e)) => c.problem(&[Step::Key("store_schema")], e),
                None => c.problem(&[Step::Key("store_schema")], "expected a schema name"),
            }
        }
        if let Some(v) = table.get("fleet") {
            if let Some(f) = c.parse::<FleetConfig>(&[Step::Key("fleet")], v.clone()) {
                for (name, value) in [("lease_ms", f.lease_ms), ("heartbeat_ms", f.heartbeat_ms)] {
                    if value == 0 || value > MAX_WAIT_MS {
                        c.problem(
                            &[Step::Key("fleet"), Step::Key(name)],
                            format!("must be between 1 and {MAX_WAIT_MS} (one year)"),
                        );
                    }
                }
                if f.heartbeat_ms >= f.lease_ms {
                    c.problem(
                        &[Step::Key("fleet"), Step::Key("heartbeat_ms")],
                        format!(
                            "must be less than lease_ms ({}): a lease must be renewed before it expires",
                            f.lease_ms
                        ),
                    );
                }
                if f.instance.as_deref() == Some("") {
                    c.problem(
                        &[Step::Key("fleet"), Step::Key("instance")],
                        "must not be empty",
                    );
                }
                config.fleet = f;
            }
        }
        // Only for a store given as a file (a refused URL is a problem of
        // its own, not a file).
        let file_store = table
            .get("store")
            .and_then(toml::Value::as_str)
            .is_none_or(|s| !crate::store::PostgresOptions::is_url(s));
        if file_store {
            for key in ["store_password_env", "store_schema", "fleet"] {
                if table.contains_key(key) {
                    c.problem(
                        &[Step::Key(key)],
                        "only for a Postgres store (`store` is a SQLite file here)",
                    );
                }
            }
        }
        for key in [
            "admin_token_env",
            "intake_token_env",
            "viewer_token_env",
            "store_password_env",
        ] {
            if let Some(v) = table.get(key) {
                match v.as_str() {
                    Some(s) if !s.is_empty() => {
                        let s = Some(s.to_string());
                        match key {
                            "admin_token_env" => config.admin_token_env = s,
                            "intake_token_env" => config.intake_token_env = s,
                            "viewer_token_env" => config.viewer_token_env = s,
                            _ => config.store_password_env = s,
                        }
                    }
                    _ => c.problem(
                        &[Step::Key(key)],
                        "expected the name of an environment variable",
                    ),
                }
            }
        }
        if let Some(v) = table.get("circuit_breaker") {
            config.circuit_breaker = breaker_section(&mut c, v);
        }
        if let Some(v) = table.get("retry") {
            let path = [Step::Key("retry")];
            if let Some(r) = c.parse::<RetryConfig>(&path, v.clone()) {
                if r.max_attempts == 0 {
                    c.problem(
                        &[Step::Key("retry"), Step::Key("max_attempts")],
                        "must be >= 1",
                    );
                }
                if r.backoff_ms == 0 {
                    c.problem(
                        &[Step::Key("retry"), Step::Key("backoff_ms")],
                        "must be > 0",
                    );
                }
                for (name, ms) in [
                    ("backoff_ms", r.backoff_ms),
                    ("max_backoff_ms", r.max_backoff_ms),
                ] {
                    if ms > MAX_WAIT_MS {
                        c.problem(
                            &[Step::Key("retry"), Step::Key(name)],
                            format!("must be at most {MAX_WAIT_MS} (one year), got {ms}"),
                        );
                    }
                }
                if r.max_backoff_ms < r.backoff_ms {
                    c.problem(
                        &[Step::Key("retry"), Step::Key("max_backoff_ms")],
                        "must be >= backoff_ms",
                    );
                }
                config.retry = r;
            }
        }
        if let Some(v) = table.get("delivery") {
            let path = [Step::Key("delivery")];
            if let Some(d) = c.parse::<DeliveryConfig>(&path, v.clone()) {
                for (name, value) in [
                    ("max_in_flight_per_endpoint", d.max_in_flight_per_endpoint),
                    ("max_pending", d.max_pending),
                    ("max_pending_bytes", d.max_pending_bytes),
                    ("max_body_bytes", d.max_body_bytes),
                ] {
                    if value == 0 {
                        c.problem(&[Step::Key("delivery"), Step::Key(name)], "must be >= 1");
                    }
                }
                for (name, value) in [
                    ("max_pending_per_endpoint", d.max_pending_per_endpoint),
                    (
                        "max_pending_bytes_per_endpoint",
                        d.max_pending_bytes_per_endpoint,
                    ),
                ] {
                    if value == Some(0) {
                        c.problem(&[Step::Key("delivery"), Step::Key(name)], "must be >= 1");
                    }
                }
                config.delivery = d;
            }
        }
        if let Some(v) = table.get("http") {
            if let Some(h) = c.parse::<HttpConfig>(&[Step::Key("http")], v.clone()) {
                for (name, value) in [
                    ("max_connections", h.max_connections as u64),
                    ("header_read_timeout_ms", h.header_read_timeout_ms),
                    ("body_read_timeout_ms", h.body_read_timeout_ms),
                ] {
                    if value == 0 {
                        c.problem(&[Step::Key("http"), Step::Key(name)], "must be >= 1");
                    }
                }
                config.http = h;
            }
        }
        if let Some(v) = table.get("history") {
            if let Some(h) = c.parse::<HistoryConfig>(&[Step::Key("history")], v.clone()) {
                let max = HistoryConfig::MAX_RESPONSE_BODY_BYTES;
                if h.response_body_bytes > max {
                    c.problem(
                        &[Step::Key("history"), Step::Key("response_body_bytes")],
                        format!("must be between 0 and {max}, got {}", h.response_body_bytes),
                    );
                }
                config.history = h;
            }
        }
        if let Some(v) = table.get("observers") {
            config.observers = observers(&mut c, v);
        }
        if c.problems.is_empty() {
            Ok(config)
        } else {
            c.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(ConfigError {
                problems: c.problems,
            })
        }
    }

    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`]: the file cannot be read, or its problems.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                path: path.display().to_string(),
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(&source)
    }

    /// Every endpoint some observer's action calls, sorted and deduplicated.
    pub fn endpoints(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .observers
            .iter()
            .flat_map(|o| o.actions.iter().map(ActionConfig::endpoint))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

//! The service's configuration file (TOML).
//!
//! Unknown keys are refused everywhere. [`Config::parse`] reports every
//! problem at once, each with its key path and line, so `check-config` can
//! list them all instead of stopping at the first.
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

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use breakwater::traits::{ActionConfig, EventKind};
use breakwater::CircuitBreakerConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Path of the SQLite database. Default `breakwater.db`.
    pub store: PathBuf,
    /// Name of the environment variable holding the admin bearer token; the
    /// admin routes answer 401 when unset.
    pub admin_token_env: Option<String>,
    /// Name of the environment variable holding the bearer token `POST
    /// /events` requires; intake is open when unset.
    pub intake_token_env: Option<String>,
    /// Breaker defaults, and overrides by endpoint (each merged over the
    /// defaults).
    pub circuit_breaker: BreakerConfig,
    /// How failed deliveries are retried.
    pub retry: RetryConfig,
    /// Delivery limits.
    pub delivery: DeliveryConfig,
    /// The HTTP listener's limits.
    pub http: HttpConfig,
    /// Which events lead to which actions.
    pub observers: Vec<Observer>,
}

/// The `[circuit_breaker]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BreakerConfig {
    /// The configuration every endpoint's breaker gets.
    pub defaults: CircuitBreakerConfig,
    /// Complete configurations (defaults merged with the override) by endpoint key.
    pub endpoints: BTreeMap<String, CircuitBreakerConfig>,
}

impl BreakerConfig {
    /// The configuration of `endpoint`'s breaker.
    pub fn for_endpoint(&self, endpoint: &str) -> &CircuitBreakerConfig {
        self.endpoints.get(endpoint).unwrap_or(&self.defaults)
    }
}

/// The `[retry]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts before a transiently failing action is dead-lettered, `>= 1`. Default 5.
    pub max_attempts: u32,
    /// Base of the exponential backoff, `> 0`. Default 200.
    pub backoff_ms: u64,
    /// Cap on one wait, `>= backoff_ms`. Default 600000 (ten minutes).
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_ms: 200,
            max_backoff_ms: 600_000,
        }
    }
}

impl RetryConfig {
    /// The base backoff.
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms)
    }

    /// The cap on one wait.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
}

/// The `[delivery]` section.
///
/// The `max_pending*` settings bound what each endpoint keeps *in memory*
/// (its window: actions queued, parked, waiting to retry or running). They
/// never refuse an event: an endpoint's actions beyond its window stay only
/// in the store (its backlog on disk) and are read back, oldest due first,
/// as the window makes room. `max_backlog_per_endpoint` bounds the backlog
/// on disk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Deliveries running at once to one endpoint, `>= 1`. Default 64.
    pub max_in_flight_per_endpoint: usize,
    /// Actions held in memory by all endpoints together, `>= 1`. Default
    /// 100000.
    pub max_pending: usize,
    /// Actions one endpoint may hold in memory, `>= 1`; a tenth of
    /// `max_pending` (at least 1) when not set.
    pub max_pending_per_endpoint: Option<usize>,
    /// Bytes of events held in memory by all endpoints together (each
    /// action counts its event's size in memory), `>= 1`. Default 67108864
    /// (64 MiB).
    pub max_pending_bytes: usize,
    /// Bytes one endpoint may hold in memory, `>= 1`; a quarter of
    /// `max_pending_bytes` when not set. An endpoint that holds nothing
    /// always takes its next action, however large.
    pub max_pending_bytes_per_endpoint: Option<usize>,
    /// Actions one endpoint may have waiting in the store (in memory or
    /// not); past it, its new actions are stored dead-lettered at once with
    /// the reason, and their events are accepted as usual. 0 means no
    /// limit. Default 10000000.
    pub max_backlog_per_endpoint: u64,
    /// Largest accepted `POST /events` body, in bytes. Default 1048576.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for running deliveries. Default 10000.
    pub shutdown_grace_ms: u64,
    /// How long an event whose every action is delivered stays stored (and
    /// its id deduplicated), in hours; 0 keeps them all. Default 168 (a
    /// week). Events with an action not delivered (pending, parked, held,
    /// dead-lettered) are kept whatever their age.
    pub keep_delivered_hours: u64,
}

impl DeliveryConfig {
    /// Actions one endpoint may hold in memory: `max_pending_per_endpoint`,
    /// or a tenth of `max_pending` (at least 1).
    pub fn endpoint_cap(&self) -> usize {
        self.max_pending_per_endpoint
            .unwrap_or(self.max_pending / 10)
            .max(1)
    }

    /// Bytes one endpoint may hold in memory:
    /// `max_pending_bytes_per_endpoint`, or a quarter of
    /// `max_pending_bytes` (at least 1).
    pub fn endpoint_bytes_cap(&self) -> usize {
        self.max_pending_bytes_per_endpoint
            .unwrap_or(self.max_pending_bytes / 4)
            .max(1)
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_endpoint: 64,
            max_pending: 100_000,
            max_pending_per_endpoint: None,
            max_pending_bytes: 64 << 20,
            max_pending_bytes_per_endpoint: None,
            max_backlog_per_endpoint: 10_000_000,
            max_body_bytes: 1 << 20,
            shutdown_grace_ms: 10_000,
            keep_delivered_hours: 168,
        }
    }
}

/// The `[http]` section: what the listener allows a client, so that slow
/// or idle connections cannot take every file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once, `>= 1`; more wait in the system's
    /// queue until one closes. Default 512.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, or stay idle
    /// between two requests, in milliseconds, `>= 1`. Default 10000.
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's body, in
    /// milliseconds, `>= 1` (a `408` then). Default 30000.
    pub body_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        }
    }
}

/// One `[[observers]]` entry: events of `entity_type` and `event_type` run `actions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observer {
    /// A unique name.
    pub name: String,
    /// The entity type it watches (exact match).
    pub entity_type: String,
    /// The event kind it watches.
    pub event_type: EventKind,
    /// What it does.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: PathBuf::from("breakwater.db"),
            admin_token_env: None,
            intake_token_env: None,
            circuit_breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            delivery: DeliveryConfig::default(),
            http: HttpConfig::default(),
            observers: Vec::new(),
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `observers[0].actions[1].url`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s): {}", .problems.len(), render(.problems))]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "store",
    "admin_token_env",
    "intake_token_env",
    "circuit_breaker",
    "retry",
    "delivery",
    "http",
    "observers",
];

/// Collects problems while walking the file.
struct Checker<'a> {
    source: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
    problems: Vec<Problem>,
}

/// A step of a key path.
#[derive(Clone, Copy)]
enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

impl<'a> Checker<'a> {
    fn path_string(path: &[Step<'_>]) -> String {
        let mut out = String::new();
        for step in path {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // A bare key is written bare; any other quoted (the
                    // empty key too, which would leave the path empty).
                    if !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        out.push_str(k);
                    } else {
                        out.push_str(&format!("{k:?}"));
                    }
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// The line of the item at `path`, from the spans of the parsed
    /// document: the deepest key or table of the path that exists.
    fn line_of(&self, path: &[Step<'_>]) -> Option<usize> {
        use toml_edit::{Item, Value};
        #[derive(Clone, Copy)]
        enum Node<'n> {
            Item(&'n Item),
            Table(&'n toml_edit::Table),
            Value(&'n Value),
        }
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best = None;
        for step in path {
            let next = match (step, node) {
                (Step::Key(k), Node::Table(t)) | (Step::Key(k), Node::Item(Item::Table(t))) => {
                    t.get_key_value(k).map(|(key, it)| {
                        best = key.span().or(best.clone());
                        Node::Item(it)
                    })
                }
                (Step::Key(k), Node::Item(Item::Value(Value::InlineTable(t))))
                | (Step::Key(k), Node::Value(Value::InlineTable(t))) => {
                    t.get_key_value(k).map(|(key, v)| {
                        best = key.span().or(best.clone());
                        Node::Item(v)
                    })
                }
                (Step::Index(i), Node::Item(Item::ArrayOfTables(a))) => a.get(*i).map(|t| {
                    best = t.span().or(best.clone());
                    Node::Table(t)
                }),
                (Step::Index(i), Node::Item(Item::Value(Value::Array(a))))
                | (Step::Index(i), Node::Value(Value::Array(a))) => a.get(*i).map(|v| {
                    best = v.span().or(best.clone());
                    Node::Value(v)
                }),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best.map(|span| line_at(self.source, span.start))
    }

    fn problem(&mut self, path: &[Step<'_>], message: impl Into<String>) {
        let line = self.line_of(path);
        self.problems.push(Problem {
            path: Self::path_string(path),
            line,
            message: message.into(),
        });
    }

    /// Deserializes `value` as `T`, recording every problem on failure,
    /// each at its own key when one key is at fault.
    ///
    /// serde stops at the first bad field and its message does not always
    /// name it ("invalid type: string, expected usize"). So for a table the
    /// key at fault is found by leaving keys out: the one whose absence makes
    /// the message change. It is recorded, left out, and the rest is tried
    /// again, so that one mistake does not hide the next; when the rest is
    /// good it is returned, for the caller's own checks.
    fn parse<T: DeserializeOwned>(&mut self, path: &[Step<'_>], value: toml::Value) -> Option<T> {
        let mut message = match T::deserialize(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e.message().to_string(),
        };
        let toml::Value::Table(mut table) = value else {
            self.problem(path, message);
            return None;
        };
        let mut left_out: Vec<String> = Vec::new();
        loop {
            if left_out
                .iter()
                .any(|k| message == format!("missing field `{k}`"))
            {
                // Only what was left out is missing now: nothing more to find.
                return None;
            }
            let Some(key) =
                unknown_field(&message, &table).or_else(|| at_fault::<T>(&table, &message))
            else {
                self.problem(path, message);
                return None;
            };
            let mut full: Vec<Step<'_>> = path.to_vec();
            full.push(Step::Key(&key));
            let line = self.line_of(&full);
            self.problems.push(Problem {
                path: Self::path_string(&full),
                line,
                message,
            });
            table.remove(&key);
            left_out.push(key);
            message = match T::deserialize(toml::Value::Table(table.clone())) {
                // The rest is good: the caller checks it too (its problems
                // are recorded, so the configuration is refused all the same).
                Ok(rest) => return Some(rest),
                Err(e) => e.message().to_string(),
            };
        }
    }
}

/// The key of `table` that `message` (the error of deserializing it as `T`)
/// is about: the one whose absence changes the message. A key whose absence
/// only makes it missing counts when no other key does (a required key that
/// is mistyped), except `type`, the tag that every action needs first.
fn at_fault<T: DeserializeOwned>(table: &toml::Table, message: &str) -> Option<String> {
    let mut fallback = None;
    for key in table.keys() {
        let mut without = table.clone();
        without.remove(key);
        match T::deserialize(toml::Value::Table(without)) {
            Ok(_) => return Some(key.clone()),
            Err(e) => {
                let m = e.message();
                if m == format!("missing field `{key}`") {
                    if fallback.is_none() && key != "type" {
                        fallback = Some(key.clone());
                    }
                } else if m != message {
                    return Some(key.clone());
                }
            }
        }
    }
    fallback
}

/// The key of `table` that serde names in an "unknown field `x`, expected
/// ..." message. Matched against the table's keys rather than cut at the
/// next backtick: a key may hold backticks (`"a`b" = 1`), and a name cut
/// short is no key of the table, so leaving it out changed nothing and the
/// same problem was recorded again, forever.
fn unknown_field(message: &str, table: &toml::Table) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    table
        .keys()
        .filter(|k| {
            rest.strip_prefix(k.as_str())
                .is_some_and(|after| after == "`" || after.starts_with("`, "))
        })
        .max_by_key(|k| k.len())
        .cloned()
}

/// The longest wait a configuration may ask for, in milliseconds: one year.
const MAX_WAIT_MS: u64 = 365 * 24 * 3600 * 1000;

fn line_at(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

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
                Some(s) if !s.is_empty() => config.store = PathBuf::from(s),
                _ => c.problem(&[Step::Key("store")], "expected a non-empty path"),
            }
        }
        for key in ["admin_token_env", "intake_token_env"] {
            if let Some(v) = table.get(key) {
                match v.as_str() {
                    Some(s) if !s.is_empty() => {
                        let s = Some(s.to_string());
                        if key == "admin_token_env" {
                            config.admin_token_env = s;
                        } else {
                            config.intake_token_env = s;
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

fn breaker_section(c: &mut Checker<'_>, v: &toml::Value) -> BreakerConfig {
    let base = [Step::Key("circuit_breaker")];
    let Some(table) = v.as_table() else {
        c.problem(&base, "expected a table");
        return BreakerConfig::default();
    };
    let mut defaults_table = table.clone();
    let endpoints = defaults_table.remove("endpoints");
    let mut out = BreakerConfig::default();
    let mut defaults_ok = false;
    if let Some(d) =
        c.parse::<CircuitBreakerConfig>(&base, toml::Value::Table(defaults_table.clone()))
    {
        defaults_ok = d.validate().is_ok();
        if let Err(e) = d.validate() {
            for p in e.problems() {
                c.problem(
                    &[Step::Key("circuit_breaker"), Step::Key(p.field)],
                    p.message.clone(),
                );
            }
        }
        out.defaults = d;
    }
    let Some(endpoints) = endpoints else {
        return out;
    };
    let Some(endpoints) = endpoints.as_table() else {
        c.problem(
            &[Step::Key("circuit_breaker"), Step::Key("endpoints")],
            "expected a table of endpoint tables",
        );
        return out;
    };
    for (endpoint, over) in endpoints {
        let path = [
            Step::Key("circuit_breaker"),
            Step::Key("endpoints"),
            Step::Key(endpoint),
        ];
        if let Some(problem) = endpoint_key_problem(endpoint) {
            c.problem(&path, problem);
        }
        let Some(over) = over.as_table() else {
            c.problem(&path, "expected a table");
            continue;
        };
        // Over the defaults as they were read: a key of the defaults that
        // was refused (and reported) there is not reported again here.
        let mut merged = match toml::Value::try_from(&out.defaults) {
            Ok(toml::Value::Table(t)) => t,
            _ => defaults_table.clone(),
        };
        merged.extend(over.clone());
        if let Some(cfg) = c.parse::<CircuitBreakerConfig>(&path, toml::Value::Table(merged)) {
            if let Err(e) = cfg.validate() {
                // A problem of the defaults is reported once, at the defaults.
                for p in e
                    .problems()
                    .iter()
                    .filter(|p| defaults_ok || over.contains_key(p.field))
                {
                    let mut full = path.to_vec();
                    full.push(Step::Key(p.field));
                    c.problem(&full, p.message.clone());
                }
            }
            out.endpoints.insert(endpoint.clone(), cfg);
        }
    }
    out
}

/// Why `key` is not an endpoint as actions name them (`scheme://host:port`),
/// if it is not: an override under another key would never apply.
fn endpoint_key_problem(key: &str) -> Option<String> {
    let action = ActionConfig::Webhook(breakwater::traits::WebhookAction {
        url: key.to_string(),
        method: "POST".into(),
        headers: Default::default(),
        body_template: None,
        signing_secret: None,
    });
    if let Err(e) = action.validate() {
        return Some(format!(
            "not an endpoint (scheme://host:port): {}",
            e.message
        ));
    }
    let canonical = action.endpoint();
    (canonical != key).then(|| {
        format!(
            "an endpoint is written scheme://host:port, as actions' URLs are keyed: \
             {canonical:?}; this key would never match one"
        )
    })
}

fn observers(c: &mut Checker<'_>, v: &toml::Value) -> Vec<Observer> {
    let base = [Step::Key("observers")];
    let Some(list) = v.as_array() else {
        c.problem(&base, "expected an array of tables ([[observers]])");
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in list.iter().enumerate() {
        let path = [Step::Key("observers"), Step::Index(i)];
        let Some(table) = entry.as_table() else {
            c.problem(&path, "expected a table");
            continue;
        };
        let mut head = table.clone();
        let actions = head.remove("actions");
        head.insert("actions".into(), toml::Value::Array(Vec::new()));
        let observer = c.parse::<Observer>(&path, toml::Value::Table(head));
        let mut parsed = Vec::new();
        match actions {
            None => {}
            Some(toml::Value::Array(actions)) => {
                for (j, action) in actions.into_iter().enumerate() {
                    let apath = [
                        Step::Key("observers"),
                        Step::Index(i),
                        Step::Key("actions"),
                        Step::Index(j),
                    ];
                    if let Some(a) = c.parse::<ActionConfig>(&apath, action) {
                        if matches!(a, ActionConfig::Email(_)) {
                            // Refused here rather than dead-lettered at the
                            // first event.
                            let mut full = apath.to_vec();
                            full.push(Step::Key("type"));
                            c.problem(
                                &full,
                                "the service sends webhook, slack and log actions; it has no \
                                 SMTP settings for email (send email from a webhook receiver, \
                                 or with the library's EmailExecutor)",
                            );
                        } else {
                            for e in a.problems() {
                                let field = e.field.split_once('.').map_or(e.field, |(_, f)| f);
                                let mut full = apath.to_vec();
                                full.push(Step::Key(field));
                                c.problem(&full, e.message.clone());
                            }
                        }
                        parsed.push(a);
                    }
                }
            }
            Some(_) => c.problem(
                &[Step::Key("observers"), Step::Index(i), Step::Key("actions")],
                "expected an array of tables ([[observers.actions]])",
            ),
        }
        if let Some(mut o) = observer {
            if !names.insert(o.name.clone()) {
                c.problem(
                    &[Step::Key("observers"), Step::Index(i), Step::Key("name")],
                    format!("duplicate observer name {:?}", o.name),
                );
            }
            o.actions = parsed;
            out.push(o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"listen = "127.0.0.1:8080"
store = "breakwater.db"
admin_token_env = "BREAKWATER_ADMIN_TOKEN"
[circuit_breaker]
sample_size = 20
[circuit_breaker.endpoints."http://127.0.0.1:9000"]
open_timeout_ms = 1000
[retry]
max_attempts = 5
backoff_ms = 200
max_backoff_ms = 600000
[delivery]
max_in_flight_per_endpoint = 64
[[observers]]
name = "order-created"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "webhook"
url = "http://127.0.0.1:9000/hooks/orders"
signing_secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.admin_token_env.as_deref(), Some("BREAKWATER_ADMIN_TOKEN"));
        assert_eq!(c.circuit_breaker.defaults.sample_size, 20);
        let over = c.circuit_breaker.for_endpoint("http://127.0.0.1:9000");
        assert_eq!(over.sample_size, 20, "overrides inherit the defaults");
        assert_eq!(over.open_timeout_ms, 1000);
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.observers.len(), 1);
        assert_eq!(c.observers[0].event_type, EventKind::Insert);
        assert_eq!(c.endpoints(), ["http://127.0.0.1:9000"]);
    }

    /// Each problem's key path and line.
    fn paths_and_lines(err: &ConfigError) -> Vec<(&str, Option<usize>)> {
        err.problems
            .iter()
            .map(|p| (p.path.as_str(), p.line))
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_path_and_line() {
        let src = r#"listen = "nowhere"
bogus = 1
[circuit_breaker]
failure_threshold = 2.0
[circuit_breaker.endpoints."http://a:1"]
sample_sise = 3
[[observers]]
name = "x"
entity_type = "Order"
event_type = "UPSERT"
[[observers.actions]]
type = "webhook"
url = "ftp://x"
[[observers.actions]]
type = "sms"
"#;
        let err = Config::parse(src).unwrap_err();
        assert_eq!(
            paths_and_lines(&err),
            [
                ("listen", Some(1)),
                ("bogus", Some(2)),
                ("circuit_breaker.failure_threshold", Some(4)),
                (
                    "circuit_breaker.endpoints.\"http://a:1\".sample_sise",
                    Some(6)
                ),
                ("observers[0].event_type", Some(10)),
                ("observers[0].actions[0].url", Some(13)),
                ("observers[0].actions[1]", Some(14)),
            ],
            "{err}"
        );
        assert!(err.problems[4].message.contains("UPSERT"), "{err}");
    }

    #[test]
    fn every_problem_of_one_action_is_reported() {
        let src = r#"[[observers]]
name = "o"
entity_type = "Order"
event_type = "INSERT"
[[observers.actions]]
type = "webhook"
url = "http://127.0.0.1:9000/h"
method = "TRACE"
signing_secret = "whsec_!!!notbase64"
headers = { Host = "elsewhere" }
"#;
        let err = Config::parse(src).unwrap_err();
        assert_eq!(
            paths_and_lines(&err),
            [
                ("observers[0].actions[0].method", Some(8)),
                ("observers[0].actions[0].signing_secret", Some(9)),
                ("observers[0].actions[0].headers", Some(10)),
            ],
            "{err}"
        );
        assert!(!err.to_string().contains("notbase64"), "{err}");
    }

    #[test]
    fn a_bad_default_is_reported_once_not_again_under_each_override() {
        let src = r#"[circuit_breaker]
sample_size = "twenty"
unknown_cb = 1
[circuit_breaker.endpoints."http://a:1"]
open_timeout_ms = 1000
[circuit_breaker.endpoints."http://b:2"]
failure_threshold = 3.0
"#;
        let err = Config::parse(src).unwrap_err();
        assert_eq!(
            paths_and_lines(&err),
            [
                ("circuit_breaker.sample_size", Some(2)),
                ("circuit_breaker.unknown_cb", Some(3)),
                (
                    "circuit_breaker.endpoints.\"http://b:2\".failure_threshold",
                    Some(7)
                ),
            ],
            "{err}"
        );
    }

    #[test]
    fn email_actions_are_refused_with_a_reason() {
        let src = format!(
            "{EXAMPLE}[[observers.actions]]\ntype = \"email\"\nto = [\"ops@example.com\"]\n\
             subject = \"s\"\nbody_template = \"b\"\n"
        );
        let err = Config::parse(&src).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].path.ends_with(".type"), "{err}");
        assert!(err.problems[0].message.contains("SMTP"), "{err}");
    }

    /// The configuration shown in `docs/service.md` is valid as written.
    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/service.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        if let Err(e) = Config::parse(&doc[start..end]) {
            panic!("docs/service.md's example: {e}");
        }
    }

    /// Regression: a type error was reported at its table's header line
    /// without the key, and one problem per table hid the others.
    #[test]
    fn every_mistyped_key_is_named_at_its_own_line() {
        let src = "[delivery]\nmax_in_flight_per_endpoint = 4\nmax_pending = \"x\"\n\
                   [circuit_breaker]\nsample_size = \"twenty\"\nfailure_threshold = 1.5\n\
                   open_timout_ms = 100\n[retry]\nmax_attempts = 0\nbogus = 1\n";
        let err = Config::parse(src).unwrap_err();
        assert_eq!(
            paths_and_lines(&err),
            [
                ("delivery.max_pending", Some(3)),
                ("circuit_breaker.sample_size", Some(5)),
                ("circuit_breaker.failure_threshold", Some(6)),
                ("circuit_breaker.open_timout_ms", Some(7)),
                ("retry.max_attempts", Some(9)),
                ("retry.bogus", Some(10)),
            ],
            "{err}"
        );
    }

    #[test]
    fn mistyped_action_fields_are_named() {
        let src = EXAMPLE.replace(
            "url = \"http://127.0.0.1:9000/hooks/orders\"",
            "url = 5\nmethod = 7",
        );
        let err = Config::parse(&src).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "observers[0].actions[0].url",
                "observers[0].actions[0].method"
            ],
            "{err}"
        );
    }

    #[test]
    fn breaker_overrides_must_be_keyed_by_endpoint() {
        for key in [
            "http://127.0.0.1:9000/",
            "http://127.0.0.1:9000/path",
            "garbage",
            "HTTP://Host:80",
        ] {
            let src = format!("[circuit_breaker.endpoints.\"{key}\"]\nopen_timeout_ms = 1000\n");
            let err = Config::parse(&src).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{key}: {err}");
            assert!(
                err.problems[0]
                    .path
                    .starts_with("circuit_breaker.endpoints."),
                "{err}"
            );
        }
        let ok = "[circuit_breaker.endpoints.\"http://127.0.0.1:9000\"]\nopen_timeout_ms = 1000\n";
        assert!(Config::parse(ok).is_ok());
    }

    /// Regression: a backoff beyond the timer's range panicked the timer
    /// task, and every waiting action stayed put until a restart.
    #[test]
    fn waits_longer_than_a_year_are_refused() {
        let src = EXAMPLE
            .replace("backoff_ms = 200", "backoff_ms = 9223372036854775807")
            .replace(
                "max_backoff_ms = 600000",
                "max_backoff_ms = 9223372036854775807",
            );
        let err = Config::parse(&src).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["retry.backoff_ms", "retry.max_backoff_ms"], "{err}");
        assert!(err.problems[0].message.contains("one year"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Config::parse("listen = \n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(1));
    }

    #[test]
    fn secrets_never_appear_in_problems() {
        let src = EXAMPLE.replace("max_attempts = 5", "max_attempts = 0");
        let err = Config::parse(&src).unwrap_err();
        assert!(!err.to_string().contains("C2FVsBQ"), "{err}");
    }
}

//! The host types of an observer runtime, and the breaker around its actions.
//!
//! A database change becomes an [`EntityEvent`]; observers map events to
//! actions ([`ActionConfig`]: a webhook, a Slack message, an email, a log
//! line); an [`ActionExecutor`] performs one action for one event. Wrapping
//! an executor in a [`CircuitBreakerActionExecutor`] protects every endpoint
//! it calls: a dead endpoint is refused at once instead of being hammered.
//!
//! Errors say what to do next ([`Error::is_transient`]: retry later;
//! [`Error::is_permanent`]: dead-letter now; [`Error::is_circuit_open`]:
//! retry after [`Error::retry_after`], never dead-letter at once). Only
//! transient errors and timeouts count as failures for a breaker: a 400 for a
//! bad payload says nothing about the endpoint's health.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::resilience::per_endpoint::PerEndpointCircuitBreaker;
use crate::resilience::{CircuitBreaker, Verdict};
use crate::CircuitError;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What happened to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// An application-defined event.
    Custom,
}

impl EventKind {
    /// The name as spelled on the wire: `INSERT`, `UPDATE`, `DELETE`, `CUSTOM`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Custom => "CUSTOM",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The old and new value of one changed field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    /// Before the change (`null` when the field was added).
    pub old: Value,
    /// After the change (`null` when the field was removed).
    pub new: Value,
}

/// A change to one entity.
///
/// # Examples
///
/// ```
/// use breakwater::traits::{EntityEvent, EventKind};
///
/// let json = r#"{
///   "id": "7b0b5b9e-8a5d-4d0c-9d9a-0c6c1f0b7e11",
///   "event_type": "INSERT",
///   "entity_type": "order",
///   "entity_id": "1f0e0a52-3f8e-4f7c-b7a4-52b3c4c0d9a1",
///   "data": { "total": 42 },
///   "timestamp": "2026-01-22T10:00:00Z"
/// }"#;
/// let event: EntityEvent = serde_json::from_str(json).unwrap();
/// assert_eq!(event.event_type, EventKind::Insert);
/// assert_eq!(event.data["total"], 42);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityEvent {
    /// The event's own id.
    pub id: Uuid,
    /// What happened.
    pub event_type: EventKind,
    /// The kind of entity (e.g. a table name).
    pub entity_type: String,
    /// Which entity.
    pub entity_id: Uuid,
    /// The entity's data after the change.
    pub data: Value,
    /// For updates: the fields that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<BTreeMap<String, FieldChange>>,
    /// Who made the change, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
}

impl EntityEvent {
    /// A new event with a fresh id, stamped now.
    pub fn new(
        event_type: EventKind,
        entity_type: impl Into<String>,
        entity_id: Uuid,
        data: Value,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type,
            entity_type: entity_type.into(),
            entity_id,
            data,
            changes: None,
            user_id: None,
            timestamp: Utc::now(),
        }
    }
}

/// An HTTP call to a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAction {
    /// `http://` or `https://` URL.
    pub url: String,
    /// HTTP method, `POST` by default.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; the event as JSON when absent.
    #[serde(default)]
    pub body_template: Option<String>,
    /// When set, the body is signed with HMAC-SHA256 under this secret.
    #[serde(default)]
    pub signing_secret: Option<String>,
}

fn default_method() -> String {
    "POST".to_string()
}

/// A message to a Slack incoming webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAction {
    /// The incoming-webhook URL.
    pub webhook_url: String,
    /// Channel override.
    #[serde(default)]
    pub channel: Option<String>,
    /// Message template.
    #[serde(default)]
    pub message_template: Option<String>,
}

/// An email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailAction {
    /// Recipients.
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// Body template.
    pub body_template: String,
}

/// A log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAction {
    /// `trace`, `debug`, `info`, `warn` or `error`; `info` by default.
    #[serde(default = "default_level")]
    pub level: String,
    /// Message template.
    #[serde(default)]
    pub message_template: Option<String>,
}

fn default_level() -> String {
    "info".to_string()
}

/// One action an observer takes for an event, tagged by `type` in configuration.
///
/// # Examples
///
/// ```
/// use breakwater::traits::ActionConfig;
///
/// let action: ActionConfig = serde_json::from_str(
///     r#"{ "type": "webhook", "url": "https://hooks.example.com/orders?x=1" }"#,
/// ).unwrap();
/// assert_eq!(action.action_type(), "webhook");
/// assert_eq!(action.endpoint(), "https://hooks.example.com:443");
/// assert!(action.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ActionConfig {
    /// An HTTP call.
    Webhook(WebhookAction),
    /// A Slack message.
    Slack(SlackAction),
    /// An email.
    Email(EmailAction),
    /// A log line.
    Log(LogAction),
}

impl ActionConfig {
    /// `webhook`, `slack`, `email` or `log`.
    pub fn action_type(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Slack(_) => "slack",
            Self::Email(_) => "email",
            Self::Log(_) => "log",
        }
    }

    /// The key the action's breaker is chosen by: `scheme://host:port` for
    /// URLs (path and query left out, so metrics labels stay few), the
    /// action type otherwise. A URL that does not parse is its own key.
    pub fn endpoint(&self) -> String {
        match self {
            Self::Webhook(w) => url_endpoint(&w.url),
            Self::Slack(s) => url_endpoint(&s.webhook_url),
            Self::Email(_) => "email".to_string(),
            Self::Log(_) => "log".to_string(),
        }
    }

    /// Checks the action.
    ///
    /// # Errors
    ///
    /// An [`ActionConfigError`] naming the field at fault.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::traits::{ActionConfig, WebhookAction};
    ///
    /// let mut hook = WebhookAction {
    ///     url: "ftp://files.example.com".into(),
    ///     method: "POST".into(),
    ///     headers: Default::default(),
    ///     body_template: None,
    ///     signing_secret: None,
    /// };
    /// let err = ActionConfig::Webhook(hook.clone()).validate().unwrap_err();
    /// assert_eq!(err.field, "webhook.url");
    /// hook.url = "https://hooks.example.com/x".into();
    /// hook.headers.insert("Bad Header".into(), "v".into());
    /// let err = ActionConfig::Webhook(hook).validate().unwrap_err();
    /// assert_eq!(err.field, "webhook.headers");
    /// ```
    pub fn validate(&self) -> std::result::Result<(), ActionConfigError> {
        match self {
            Self::Webhook(w) => {
                parse_url(&w.url).map_err(|m| ActionConfigError::new("webhook.url", m))?;
                let m = w.method.to_ascii_uppercase();
                if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                    return Err(ActionConfigError::new(
                        "webhook.method",
                        format!(
                            "must be GET, POST, PUT, PATCH or DELETE, got {:?}",
                            w.method
                        ),
                    ));
                }
                for (name, value) in &w.headers {
                    if name.is_empty() || !name.bytes().all(is_token_byte) {
                        return Err(ActionConfigError::new(
                            "webhook.headers",
                            format!("{name:?} is not a valid header name"),
                        ));
                    }
                    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return Err(ActionConfigError::new(
                            "webhook.headers",
                            format!("the value of {name:?} holds a line break or NUL"),
                        ));
                    }
                }
                if w.signing_secret.as_deref() == Some("") {
                    return Err(ActionConfigError::new(
                        "webhook.signing_secret",
                        "must not be empty when set",
                    ));
                }
                Ok(())
            }
            Self::Slack(s) => {
                parse_url(&s.webhook_url)
                    .map_err(|m| ActionConfigError::new("slack.webhook_url", m))?;
                Ok(())
            }
            Self::Email(e) => {
                if e.to.is_empty() {
                    return Err(ActionConfigError::new(
                        "email.to",
                        "needs at least one recipient",
                    ));
                }
                if let Some(bad) = e.to.iter().find(|a| !is_plausible_email(a)) {
                    return Err(ActionConfigError::new(
                        "email.to",
                        format!("{bad:?} is not an email address"),
                    ));
                }
                if e.subject.trim().is_empty() {
                    return Err(ActionConfigError::new("email.subject", "must not be empty"));
                }
                Ok(())
            }
            Self::Log(l) => {
                if !["trace", "debug", "info", "warn", "error"].contains(&l.level.as_str()) {
                    return Err(ActionConfigError::new(
                        "log.level",
                        format!(
                            "must be trace, debug, info, warn or error, got {:?}",
                            l.level
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// RFC 9110 token characters (header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_plausible_email(a: &str) -> bool {
    match a.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !a.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// The parts of an http(s) URL that choose its breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts {
    scheme: &'static str,
    host: String,
    port: u16,
}

fn parse_url(url: &str) -> std::result::Result<UrlParts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL (expected http:// or https://)"))?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => ("http", 80),
        "https" => ("https", 443),
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (expected http or https)"
            ))
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed IPv6 address in {url:?}"))?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{url:?} has no host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} has white space in its host"));
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{p:?} is not a port (1..=65535)"))?,
    };
    Ok(UrlParts {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn url_endpoint(url: &str) -> String {
    match parse_url(url) {
        Ok(p) => format!("{}://{}:{}", p.scheme, p.host, p.port),
        Err(_) => url.to_string(),
    }
}

/// An action configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionConfigError {
    /// The field at fault, e.g. `webhook.url`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ActionConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for ActionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ActionConfigError {}

/// What performing one action came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// `webhook`, `slack`, `email`, `log`.
    pub action_type: String,
    /// Whether the action did what it should.
    pub success: bool,
    /// A human-readable account.
    pub message: String,
    /// How long it took.
    pub duration_ms: u64,
    /// The HTTP status, for HTTP actions.
    pub status_code: Option<u16>,
}

/// Why an action failed, and so what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// It may work later: retry (5xx, 408, 429, connection errors).
    #[error("transient failure: {message}")]
    Transient {
        /// What went wrong.
        message: String,
        /// The HTTP status, if any.
        status: Option<u16>,
        /// How long the other side asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// It will not work however often it is tried (4xx other than 408/429,
    /// a bad configuration): dead-letter it.
    #[error("permanent failure: {message}")]
    Permanent {
        /// What went wrong.
        message: String,
        /// The HTTP status, if any.
        status: Option<u16>,
    },
    /// The action took too long and was cancelled: retry.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The endpoint's circuit is open: the action did not run. Retry after
    /// `retry_after`; never dead-letter at once, never count as a failure.
    #[error("circuit open for {endpoint}{}", fmt_retry(*.retry_after))]
    CircuitOpen {
        /// The endpoint whose breaker refused.
        endpoint: String,
        /// Time until the breaker lets probes through, when known.
        retry_after: Option<Duration>,
    },
    /// The action's configuration is invalid: permanent.
    #[error("invalid action: {0}")]
    InvalidAction(#[from] ActionConfigError),
}

fn fmt_retry(d: Option<Duration>) -> String {
    d.map(|d| format!(", retry after {d:?}"))
        .unwrap_or_default()
}

impl Error {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            status: None,
        }
    }

    /// The failure an HTTP status means: 408, 429 and 5xx are transient,
    /// other statuses permanent.
    pub fn from_status(
        status: u16,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        if status == 408 || status == 429 || status >= 500 {
            Self::Transient {
                message: message.into(),
                status: Some(status),
                retry_after,
            }
        } else {
            Self::Permanent {
                message: message.into(),
                status: Some(status),
            }
        }
    }

    /// Retrying later may work (transient failures and timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Timeout(_))
    }

    /// Retrying will not work: dead-letter it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. } | Self::InvalidAction(_))
    }

    /// A breaker refused the action without running it.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. })
    }

    /// How long to wait before retrying, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } | Self::CircuitOpen { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status behind the error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Transient { status, .. } | Self::Permanent { status, .. } => *status,
            _ => None,
        }
    }

    /// How a breaker counts this error: transient failures and timeouts are
    /// failures; permanent errors and rejections by another breaker say
    /// nothing about the endpoint and are ignored.
    pub fn verdict(&self) -> Verdict {
        if self.is_transient() {
            Verdict::Failure
        } else {
            Verdict::Ignore
        }
    }
}

/// Performs actions. Usable as `Arc<dyn ActionExecutor>`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use breakwater::traits::{ActionConfig, ActionExecutor, ActionResult, EntityEvent, Result};
///
/// struct Printer;
///
/// #[async_trait]
/// impl ActionExecutor for Printer {
///     async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
///         Ok(ActionResult {
///             action_type: action.action_type().to_string(),
///             success: true,
///             message: format!("{} {}", event.event_type, event.entity_type),
///             duration_ms: 0,
///             status_code: None,
///         })
///     }
/// }
///
/// let executors: Vec<Arc<dyn ActionExecutor>> = vec![Arc::new(Printer)];
/// # assert_eq!(executors.len(), 1);
/// ```
#[async_trait]
pub trait ActionExecutor: Send + Sync {
    /// Performs `action` for `event`.
    ///
    /// # Errors
    ///
    /// An [`Error`] saying whether to retry, dead-letter or wait.
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult>;
}

#[async_trait]
impl<T: ActionExecutor + ?Sized> ActionExecutor for Arc<T> {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        (**self).execute(event, action).await
    }
}

#[async_trait]
impl<T: ActionExecutor + ?Sized> ActionExecutor for Box<T> {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        (**self).execute(event, action).await
    }
}

/// Which breaker guards an action.
#[derive(Debug, Clone)]
enum Guard {
    /// One breaker for everything.
    One(Arc<CircuitBreaker>),
    /// One breaker per [`ActionConfig::endpoint`].
    PerEndpoint(Arc<PerEndpointCircuitBreaker>),
}

/// An [`ActionExecutor`] whose actions run through circuit breakers.
///
/// Only transient errors, timeouts and `Ok` results with `success == false`
/// count as failures; permanent errors pass through without touching the
/// breaker. A refusal becomes [`Error::CircuitOpen`] with the endpoint and
/// `retry_after`. Invalid actions are refused with
/// [`Error::InvalidAction`] before any breaker is consulted.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
/// use breakwater::traits::{ActionConfig, ActionExecutor, CircuitBreakerActionExecutor, EntityEvent, EventKind, LogAction};
/// # use async_trait::async_trait;
/// # use breakwater::traits::{ActionResult, Result};
/// # struct Inner;
/// # #[async_trait]
/// # impl ActionExecutor for Inner {
/// #     async fn execute(&self, _: &EntityEvent, a: &ActionConfig) -> Result<ActionResult> {
/// #         Ok(ActionResult { action_type: a.action_type().into(), success: true, message: String::new(), duration_ms: 0, status_code: None })
/// #     }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
/// let executor = CircuitBreakerActionExecutor::new(Inner, breaker.clone());
/// let event = EntityEvent::new(EventKind::Insert, "order", uuid::Uuid::new_v4(), serde_json::json!({}));
/// let action = ActionConfig::Log(LogAction { level: "info".into(), message_template: None });
/// assert!(executor.execute(&event, &action).await.unwrap().success);
/// assert_eq!(breaker.metrics().successes, 1);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerActionExecutor<E> {
    inner: E,
    guard: Guard,
}

impl<E> CircuitBreakerActionExecutor<E> {
    /// Guards every action of `inner` with one breaker.
    pub fn new(inner: E, circuit_breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            inner,
            guard: Guard::One(circuit_breaker),
        }
    }

    /// Guards each endpoint ([`ActionConfig::endpoint`]) with its own breaker.
    pub fn per_endpoint(inner: E, breakers: Arc<PerEndpointCircuitBreaker>) -> Self {
        Self {
            inner,
            guard: Guard::PerEndpoint(breakers),
        }
    }

    /// The wrapped executor.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The breaker that guards `action`.
    pub fn breaker_for(&self, action: &ActionConfig) -> Arc<CircuitBreaker> {
        match &self.guard {
            Guard::One(b) => b.clone(),
            Guard::PerEndpoint(p) => p.get_or_create(&action.endpoint()),
        }
    }
}

/// How a breaker counts an action's result.
fn classify(result: &Result<ActionResult>) -> Verdict {
    match result {
        Ok(r) if r.success => Verdict::Success,
        Ok(_) => Verdict::Failure,
        Err(e) => e.verdict(),
    }
}

#[async_trait]
impl<E: ActionExecutor> ActionExecutor for CircuitBreakerActionExecutor<E> {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        action.validate()?;
        let breaker = self.breaker_for(action);
        breaker
            .call_with(classify, || self.inner.execute(event, action))
            .await
            .map_err(|e| match e {
                CircuitError::Open { retry_after } => Error::CircuitOpen {
                    endpoint: action.endpoint(),
                    retry_after,
                },
                CircuitError::Inner(e) => e,
                CircuitError::Timeout { limit } => Error::Timeout(limit),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_scheme_host_and_port_only() {
        let cases = [
            (
                "https://Hooks.Example.com/a/b?c=d",
                "https://hooks.example.com:443",
            ),
            ("http://example.com", "http://example.com:80"),
            (
                "http://user:pw@example.com:8080/x",
                "http://example.com:8080",
            ),
            ("https://[::1]:9000/hook", "https://[::1]:9000"),
            ("http://127.0.0.1:3000#frag", "http://127.0.0.1:3000"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(url_endpoint(url), want, "{url}");
        }
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, want) in [
            ("", "not a URL"),
            ("ftp://x", "unsupported scheme"),
            ("http://", "no host"),
            ("http://:80", "no host"),
            ("http://h:99999", "not a port"),
            ("http://h:0", "not a port"),
            ("http://[::1", "unclosed IPv6"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn statuses_map_to_what_to_do_next() {
        assert!(Error::from_status(503, "x", None).is_transient());
        assert!(Error::from_status(429, "x", Some(Duration::from_secs(3))).is_transient());
        assert_eq!(
            Error::from_status(429, "x", Some(Duration::from_secs(3))).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert!(Error::from_status(408, "x", None).is_transient());
        assert!(Error::from_status(400, "x", None).is_permanent());
        assert!(Error::from_status(404, "x", None).is_permanent());
        let open = Error::CircuitOpen {
            endpoint: "http://a:80".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(open.is_circuit_open() && !open.is_permanent() && !open.is_transient());
        assert_eq!(
            open.to_string(),
            "circuit open for http://a:80, retry after 2s"
        );
        assert_eq!(open.verdict(), Verdict::Ignore);
    }

    #[test]
    fn action_config_is_tagged_by_type_and_refuses_unknown_fields() {
        let a: ActionConfig = serde_json::from_str(
            r##"{"type":"slack","webhook_url":"https://hooks.slack.com/services/T/B/X","channel":"#ops"}"##,
        )
        .unwrap();
        assert_eq!(a.action_type(), "slack");
        assert_eq!(a.endpoint(), "https://hooks.slack.com:443");
        let e = serde_json::from_str::<ActionConfig>(
            r#"{"type":"webhook","url":"http://a","bogus":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = serde_json::from_str::<ActionConfig>(r#"{"type":"sms"}"#).unwrap_err();
        assert!(e.to_string().contains("sms"), "{e}");
        let l: ActionConfig = serde_json::from_str(r#"{"type":"log"}"#).unwrap();
        assert_eq!(
            l,
            ActionConfig::Log(LogAction {
                level: "info".into(),
                message_template: None
            })
        );
    }

    #[test]
    fn validation_names_the_field() {
        let hook = |url: &str, method: &str| {
            ActionConfig::Webhook(WebhookAction {
                url: url.into(),
                method: method.into(),
                headers: BTreeMap::new(),
                body_template: None,
                signing_secret: None,
            })
        };
        assert_eq!(
            hook("", "POST").validate().unwrap_err().field,
            "webhook.url"
        );
        assert_eq!(
            hook("http://a", "BREW").validate().unwrap_err().field,
            "webhook.method"
        );
        assert!(hook("http://a", "post").validate().is_ok());
        let mut w = WebhookAction {
            url: "http://a".into(),
            method: "POST".into(),
            headers: BTreeMap::from([("X-Ok".into(), "a\r\nInjected: 1".into())]),
            body_template: None,
            signing_secret: None,
        };
        assert_eq!(
            ActionConfig::Webhook(w.clone())
                .validate()
                .unwrap_err()
                .field,
            "webhook.headers"
        );
        w.headers.clear();
        w.signing_secret = Some(String::new());
        assert_eq!(
            ActionConfig::Webhook(w).validate().unwrap_err().field,
            "webhook.signing_secret"
        );
        let email = |to: Vec<&str>, subject: &str| {
            ActionConfig::Email(EmailAction {
                to: to.into_iter().map(String::from).collect(),
                subject: subject.into(),
                body_template: String::new(),
            })
        };
        assert_eq!(email(vec![], "s").validate().unwrap_err().field, "email.to");
        assert_eq!(
            email(vec!["nobody"], "s").validate().unwrap_err().field,
            "email.to"
        );
        assert_eq!(
            email(vec!["a@b.c"], " ").validate().unwrap_err().field,
            "email.subject"
        );
        assert!(email(vec!["a@b.c"], "hi").validate().is_ok());
        let log = ActionConfig::Log(LogAction {
            level: "loud".into(),
            message_template: None,
        });
        assert_eq!(log.validate().unwrap_err().field, "log.level");
    }

    #[test]
    fn events_round_trip_through_json() {
        let mut e = EntityEvent::new(
            EventKind::Update,
            "user",
            Uuid::new_v4(),
            serde_json::json!({"a": 1}),
        );
        e.changes = Some(BTreeMap::from([(
            "a".to_string(),
            FieldChange {
                old: 0.into(),
                new: 1.into(),
            },
        )]));
        e.user_id = Some("u-1".into());
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""event_type":"UPDATE""#));
        let back: EntityEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }
}

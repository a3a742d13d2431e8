//! Real action executors: webhooks, Slack, email, log lines.
//!
//! | executor | performs | how |
//! | --- | --- | --- |
//! | [`WebhookExecutor`] | `webhook` and `slack` actions | reqwest over rustls, one pooled client |
//! | [`SlackExecutor`] | `slack` actions | a webhook with Slack's payload (`text`, `channel`) |
//! | [`EmailExecutor`] | `email` actions | SMTP with lettre (implicit TLS, STARTTLS, or plain for local relays) |
//! | [`LogExecutor`] | `log` actions | one `tracing` event at the configured level |
//! | [`Executors`] | every action | routes each action to one of the above |
//!
//! Wrap any of them in a
//! [`CircuitBreakerActionExecutor`](crate::traits::CircuitBreakerActionExecutor)
//! to give each endpoint its breaker.
//!
//! # Webhooks
//!
//! A webhook is one HTTP request: the action's method and headers, and as
//! body the rendered `body_template` or, without one, the event as JSON
//! (`Content-Type: application/json` unless the action sets its own).
//! Redirects are not followed (a 3xx is a permanent error: a receiver that
//! moved must be reconfigured, and a redirect must not carry a signed body
//! elsewhere). A connect timeout and a total timeout (up to the end of the
//! response body) bound every request; at most
//! [`max_response_bytes`](WebhookExecutorBuilder::max_response_bytes) of a
//! response body are read, so a hostile receiver cannot make the executor
//! read gigabytes. Each call is one attempt: the client never retries on
//! its own, so every attempt passes through the caller's backoff and breaker.
//!
//! What an answer means for the next attempt is in [`Error`]: 2xx is
//! delivered; 5xx, 408, 429, timeouts, refused or reset connections, DNS and
//! TLS failures, and answers cut off are transient; 3xx and other 4xx are
//! permanent; `410 Gone` is [`Error::Gone`]. `Retry-After` (seconds or an
//! HTTP date) on 429 and 503 becomes [`Error::retry_after`], at most
//! [`max_retry_after`](WebhookExecutorBuilder::max_retry_after).
//!
//! # Signing
//!
//! With a `signing_secret`, each request is signed the
//! [Standard Webhooks](https://www.standardwebhooks.com) way (see
//! [`signing`]): `webhook-id`, `webhook-timestamp` (this attempt's Unix
//! seconds: every attempt is signed anew) and `webhook-signature`. The
//! message id must be the same on every attempt of one action, so that the
//! receiver can drop duplicates, also after a restart of the sender. The
//! [`ActionExecutor::execute`] path derives it from the event and the action
//! ([`WebhookExecutor::message_id`]); a caller that keeps its own id (a
//! stored delivery's id) passes it to [`WebhookExecutor::execute_with_id`].
//!
//! # Examples
//!
//! ```no_run
//! use breakwater::traits::{ActionConfig, ActionExecutor, EntityEvent, EventKind};
//! use breakwater::webhook::WebhookExecutor;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let action: ActionConfig = serde_json::from_str(r#"{
//!     "type": "webhook",
//!     "url": "https://hooks.example.com/orders",
//!     "signing_secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
//! }"#)?;
//! action.validate()?;
//! let event = EntityEvent::new(EventKind::Insert, "order", uuid::Uuid::new_v4(), serde_json::json!({"total": 42}));
//! let executor = WebhookExecutor::new()?;
//! let result = executor.execute(&event, &action).await?;
//! assert!(result.success);
//! # Ok(()) }
//! ```

mod classify;
mod dispatch;
mod email;
mod log;
mod record;
pub mod signing;
mod slack;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use self::dispatch::Executors;
pub use self::email::{EmailExecutor, EmailExecutorBuilder, SmtpTls};
pub use self::log::LogExecutor;
pub use self::signing::SigningKey;
pub use self::slack::SlackExecutor;
use crate::traits::cache::BoundedCache;
use crate::traits::{
    request_url, template, webhook_headers, webhook_method, ActionConfig, ActionConfigError,
    ActionExecutor, ActionResult, EntityEvent, Error, ErrorKind, Exchange, Result, WebhookAction,
};

/// Performs `webhook` (and `slack`) actions over HTTP(S).
///
/// One pooled `reqwest` client (rustls) per executor; `Clone` is cheap and
/// shares the pool. What an action's requests share whatever the event (its
/// parsed URL, headers, compiled body template and decoded key) is worked out
/// on its first request and kept for the next ones, for up to 1024 distinct
/// actions; an action that changes is a new action. See the [module docs](self) for what a request looks
/// like and how answers are classified.
#[derive(Debug, Clone)]
pub struct WebhookExecutor {
    client: reqwest::Client,
    limits: Limits,
    prepared: PreparedCache,
}

/// The limits of every request.
#[derive(Debug, Clone, Copy)]
struct Limits {
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
    max_retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_response_bytes: 16 * 1024,
            max_retry_after: Duration::from_secs(600),
        }
    }
}

/// Builds a [`WebhookExecutor`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::webhook::WebhookExecutor;
///
/// let executor = WebhookExecutor::builder()
///     .connect_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(10))
///     .max_response_bytes(4096)
///     .max_retry_after(Duration::from_secs(300))
///     .build()
///     .unwrap();
/// # drop(executor);
/// assert!(WebhookExecutor::builder().timeout(Duration::ZERO).build().is_err());
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct WebhookExecutorBuilder {
    limits: Limits,
}

impl WebhookExecutorBuilder {
    /// Time to open a connection (TCP and TLS); 5 s by default.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.limits.connect_timeout = limit;
        self
    }

    /// Time for a whole request, up to the end of the response body; 30 s
    /// by default.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.limits.timeout = limit;
        self
    }

    /// How much of a response body is read (the rest is dropped with the
    /// connection); 16 KiB by default.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.limits.max_response_bytes = limit;
        self
    }

    /// The longest `Retry-After` honoured; 10 minutes by default.
    pub fn max_retry_after(mut self, limit: Duration) -> Self {
        self.limits.max_retry_after = limit;
        self
    }

    /// The executor.
    ///
    /// # Errors
    ///
    /// A permanent [`Error`] when a timeout is zero or the TLS backend
    /// cannot start.
    pub fn build(self) -> Result<WebhookExecutor> {
        let l = self.limits;
        if l.connect_timeout.is_zero() || l.timeout.is_zero() {
            return Err(Error::permanent(
                "webhook executor: connect_timeout and timeout must be above zero",
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(l.connect_timeout)
            // The total timeout is `send`'s: one timer for the request and
            // the read of its answer, rather than reqwest's boxed one that
            // moves into the response and is polled for every body frame.
            .redirect(reqwest::redirect::Policy::none())
            // Attempts are the caller's to repeat (with its backoff and
            // breaker), never the client's. Zero retries also spares
            // reqwest a copy of every request's headers and body, kept
            // in case it retried.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .user_agent(concat!("breakwater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(WebhookExecutor {
            client,
            limits: l,
            prepared: PreparedCache::default(),
        })
    }
}

/// A request ready to go.
struct Request<'a> {
    method: Method,
    url: url::Url,
    headers: HeaderMap,
    body: Vec<u8>,
    sign: Option<(&'a SigningKey, &'a str)>,
    /// Whether the URL's path is a secret (Slack's): left out of a record.
    secret_path: bool,
    /// The values of the request's secret headers, to redact wherever the
    /// answer's body echoes them.
    secrets: &'a [Vec<u8>],
}

/// What came back from a 2xx answer.
struct Delivered {
    status: http::StatusCode,
    body: Vec<u8>,
}

impl WebhookExecutor {
    /// An executor with the default limits (connect 5 s, total 30 s, 16 KiB
    /// of response body, `Retry-After` up to 10 minutes).
    ///
    /// # Errors
    ///
    /// A permanent [`Error`] when the TLS backend cannot start.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A builder to choose the limits.
    pub fn builder() -> WebhookExecutorBuilder {
        WebhookExecutorBuilder::default()
    }

    /// The `webhook-id` of `action` for `event`:
    /// `msg_<event id, 32 hex digits>_<16 hex digits>`, the latter the start
    /// of a SHA-256 over the action's method (upper case), URL and body
    /// template. The same event and action give the same id on every attempt
    /// and after a restart; two different webhooks of one event get
    /// different ids. Changing the headers or rotating the secret keeps it.
    ///
    /// # Examples
    ///
    /// ```
    /// use breakwater::traits::{EntityEvent, EventKind, WebhookAction};
    /// use breakwater::webhook::WebhookExecutor;
    ///
    /// let event = EntityEvent::new(EventKind::Insert, "order", uuid::Uuid::new_v4(), serde_json::json!({}));
    /// let hook = |url: &str| WebhookAction {
    ///     url: url.into(),
    ///     method: "POST".into(),
    ///     headers: Default::default(),
    ///     body_template: None,
    ///     signing_secret: None,
    /// };
    /// let id = WebhookExecutor::message_id(&event, &hook("https://a.example/x"));
    /// assert_eq!(id, WebhookExecutor::message_id(&event, &hook("https://a.example/x")));
    /// assert_ne!(id, WebhookExecutor::message_id(&event, &hook("https://a.example/y")));
    /// assert!(id.starts_with(&format!("msg_{}_", event.id.simple())));
    /// ```
    pub fn message_id(event: &EntityEvent, action: &WebhookAction) -> String {
        message_id(event, &action_digest(action))
    }

    /// Performs `action` for `event`, signing it (when it has a secret) with
    /// `message_id` as `webhook-id`: for callers that keep their own id per
    /// delivery. `message_id` must be a valid header value; an action
    /// without a secret is sent without the Standard Webhooks headers.
    ///
    /// # Errors
    ///
    /// An [`Error`] classified as the [module docs](self) say;
    /// [`Error::InvalidAction`] for an action that cannot be sent.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request (the receiver may or may not
    /// have got it).
    pub async fn execute_with_id(
        &self,
        event: &EntityEvent,
        action: &WebhookAction,
        message_id: &str,
    ) -> Result<ActionResult> {
        let started = Instant::now();
        let prepared = self.prepared.get(action)?;
        self.deliver(started, &prepared, event, message_id, None)
            .await
    }

    /// As [`execute_with_id`](WebhookExecutor::execute_with_id), filling
    /// `exchange` with the request and the answer (secrets redacted, the
    /// body's start only).
    ///
    /// # Errors
    ///
    /// As [`execute_with_id`](WebhookExecutor::execute_with_id).
    pub async fn execute_with_id_recorded(
        &self,
        event: &EntityEvent,
        action: &WebhookAction,
        message_id: &str,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        let started = Instant::now();
        let prepared = self.prepared.get(action).inspect_err(|_| {
            exchange.error_kind = Some(ErrorKind::Request);
        })?;
        self.deliver(started, &prepared, event, message_id, Some(exchange))
            .await
    }

    /// Sends `prepared`'s request for `event`.
    async fn deliver(
        &self,
        started: Instant,
        prepared: &Prepared,
        event: &EntityEvent,
        message_id: &str,
        mut record: Option<&mut Exchange>,
    ) -> Result<ActionResult> {
        // Room for the signature headers and the client's own (user agent,
        // accept), so that no insert has to grow the map.
        let mut headers = HeaderMap::with_capacity(prepared.headers.len() + 5);
        headers.extend(
            prepared
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let request = Request {
            method: prepared.method.clone(),
            url: prepared.url.clone(),
            headers,
            body: prepared.body(event).inspect_err(|_| {
                if let Some(x) = record.as_deref_mut() {
                    x.error_kind = Some(ErrorKind::Request);
                }
            })?,
            sign: prepared.key.as_ref().map(|key| (key, message_id)),
            secret_path: false,
            secrets: &prepared.secrets,
        };
        let delivered = self.send(request, record).await?;
        Ok(ActionResult {
            action_type: "webhook".into(),
            success: true,
            message: classify::describe(delivered.status, &delivered.body),
            duration_ms: elapsed_ms(started),
            status_code: Some(delivered.status.as_u16()),
        })
    }

    /// Sends one request and reads (the start of) its answer; with
    /// `record`, notes both there.
    async fn send(
        &self,
        request: Request<'_>,
        mut record: Option<&mut Exchange>,
    ) -> Result<Delivered> {
        let Request {
            method,
            url,
            mut headers,
            body,
            sign,
            secret_path,
            secrets,
        } = request;
        if let Some((key, id)) = sign {
            // Named once, not checked anew on every request.
            const ID: HeaderName = HeaderName::from_static(signing::ID_HEADER);
            const TIMESTAMP: HeaderName = HeaderName::from_static(signing::TIMESTAMP_HEADER);
            const SIGNATURE: HeaderName = HeaderName::from_static(signing::SIGNATURE_HEADER);
            // The three values in one buffer, shared by the three headers:
            // reqwest copies the header map for every request, and a value
            // of its own would cost an allocation there too.
            let timestamp = unix_seconds(SystemTime::now());
            let mut values = Vec::with_capacity(id.len() + 20 + signing::SIGNATURE_LEN);
            values.extend_from_slice(id.as_bytes());
            let id_end = values.len();
            values.extend_from_slice(itoa::Buffer::new().format(timestamp).as_bytes());
            let timestamp_end = values.len();
            key.sign_into(id, timestamp, &body, &mut values);
            let values = bytes::Bytes::from(values);
            let id_value =
                HeaderValue::from_maybe_shared(values.slice(..id_end)).map_err(|_| {
                    Error::permanent(format!("the message id {id:?} is not a valid header value"))
                })?;
            let value = |bytes| {
                HeaderValue::from_maybe_shared(bytes)
                    .map_err(|_| Error::permanent("the signature is not a valid header value"))
            };
            headers.insert(ID, id_value);
            headers.insert(TIMESTAMP, value(values.slice(id_end..timestamp_end))?);
            headers.insert(SIGNATURE, value(values.slice(timestamp_end..))?);
        }
        if let Some(x) = record.as_deref_mut() {
            x.method = method.as_str().to_string();
            x.url = record::url(&url, secret_path);
            x.request_headers = record::headers(&headers);
        }
        let l = self.limits;
        let kind = |record: &mut Option<&mut Exchange>, k: ErrorKind| {
            if let Some(x) = record.as_deref_mut() {
                x.error_kind = Some(k);
            }
        };
        let transport = |e: reqwest::Error, record: &mut Option<&mut Exchange>| {
            kind(record, record::transport_kind(&e));
            classify::transport_error(&e.without_url(), l.connect_timeout, l.timeout)
        };
        // The request is built whole: a builder would copy every header
        // into a map of its own.
        let mut request = reqwest::Request::new(method, url);
        *request.headers_mut() = headers;
        *request.body_mut() = Some(body.into());
        // One timer for the request and the read of its answer.
        let deadline = tokio::time::sleep(l.timeout);
        tokio::pin!(deadline);
        let mut response = tokio::select! {
            biased;
            sent = self.client.execute(request) => sent.map_err(|e| transport(e, &mut record))?,
            () = &mut deadline => {
                kind(&mut record, ErrorKind::Timeout);
                return Err(Error::Timeout(l.timeout));
            }
        };
        let status = response.status();
        if let Some(x) = record.as_deref_mut() {
            x.status = Some(status.as_u16());
            x.response_headers = record::headers(response.headers());
        }
        let mut taken = Vec::new();
        let read = tokio::select! {
            biased;
            read = read_capped(&mut response, l.max_response_bytes, &mut taken) => {
                read.map_err(|e| transport(e, &mut record))
            }
            () = &mut deadline => {
                kind(&mut record, ErrorKind::Timeout);
                Err(Error::Timeout(l.timeout))
            }
        };
        // A receiver that echoes a credential in its answer must not put it
        // into an error's message or a record.
        let taken = record::scrub(taken, secrets);
        if let Some(x) = record.as_deref_mut() {
            record::body(x, &taken);
            if read.is_err() && !matches!(x.error_kind, Some(ErrorKind::Timeout)) {
                x.error_kind = Some(ErrorKind::BodyRead);
            }
        }
        if status.is_success() {
            read?;
            return Ok(Delivered {
                status,
                body: taken,
            });
        }
        // The status decides; a body cut off after it changes nothing.
        kind(&mut record, record::status_kind(status));
        Err(classify::status_error(
            status,
            response.headers(),
            &taken,
            l.max_retry_after,
            SystemTime::now(),
        ))
    }
}

/// What every request of one webhook action shares, whatever the event:
/// checked, parsed and keyed once.
struct Prepared {
    method: Method,
    url: url::Url,
    /// The action's headers, `Content-Type` included.
    headers: HeaderMap,
    /// The compiled body template; the event as JSON when absent.
    body: Option<template::Compiled>,
    key: Option<SigningKey>,
    /// The values of its secret headers (worked out once: the signature
    /// headers added per request are not secret).
    secrets: Vec<Vec<u8>>,
    /// The action's part of its message ids.
    digest: [u8; 8],
}

impl Prepared {
    /// Checks `action`; the error names the field at fault.
    fn new(action: &WebhookAction) -> Result<Self> {
        let (url, _) = request_url(&action.url, "webhook.url")?;
        let method = webhook_method(&action.method)?;
        let mut headers = webhook_headers(&action.headers)?;
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let body = match &action.body_template {
            Some(t) => Some(template::Compiled::new("webhook.body_template", t)?),
            None => None,
        };
        let key = match &action.signing_secret {
            Some(secret) => Some(SigningKey::from_secret(secret)?),
            None => None,
        };
        let secrets = record::secret_values(&headers);
        Ok(Self {
            method,
            url,
            headers,
            body,
            key,
            secrets,
            digest: action_digest(action),
        })
    }

    /// The request body for `event`.
    fn body(&self, event: &EntityEvent) -> Result<Vec<u8>> {
        match &self.body {
            Some(template) => Ok(template.render(event)?.into_bytes()),
            None => event_json(event),
        }
    }
}

/// Prepared actions by their content, shared by an executor's clones, so
/// that an action's URL is parsed, its template compiled and its key
/// decoded once rather than on every request. An action that fails its
/// checks is not kept.
#[derive(Clone, Debug)]
struct PreparedCache(BoundedCache<WebhookAction, Arc<Prepared>>);

impl Default for PreparedCache {
    fn default() -> Self {
        Self(BoundedCache::new(Self::CAP))
    }
}

impl PreparedCache {
    /// Distinct actions kept at most.
    const CAP: usize = 1024;

    /// `action` prepared: kept from an earlier request, or checked now.
    fn get(&self, action: &WebhookAction) -> Result<Arc<Prepared>> {
        self.0
            .get_or_try_insert(action, || Prepared::new(action).map(Arc::new))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The action's part of its message ids: the start of a SHA-256 over its
/// method (upper case), URL and body template.
fn action_digest(action: &WebhookAction) -> [u8; 8] {
    let mut hash = Sha256::new();
    hash.update(action.method.to_ascii_uppercase().as_bytes());
    hash.update([0]);
    hash.update(action.url.as_bytes());
    hash.update([0]);
    hash.update(
        action
            .body_template
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    let digest = hash.finalize();
    let mut start = [0; 8];
    start.copy_from_slice(&digest[..8]);
    start
}

/// `msg_<event id, 32 hex digits>_<digest, 16 hex digits>`.
fn message_id(event: &EntityEvent, digest: &[u8; 8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(4 + 32 + 1 + 16);
    id.push_str("msg_");
    id.push_str(
        event
            .id
            .simple()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    id.push('_');
    for byte in digest {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

/// Reads `response`'s body into `into`, up to `cap` bytes.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
    into: &mut Vec<u8>,
) -> std::result::Result<(), reqwest::Error> {
    while into.len() < cap {
        match response.chunk().await? {
            Some(chunk) => {
                let take = chunk.len().min(cap - into.len());
                into.extend_from_slice(&chunk[..take]);
            }
            None => break,
        }
    }
    Ok(())
}

/// The event as the default body.
fn event_json(event: &EntityEvent) -> Result<Vec<u8>> {
    // Room for a typical event up front, rather than growing from 128 bytes.
    let mut body = Vec::with_capacity(512);
    serde_json::to_writer(&mut body, event)
        .map_err(|e| Error::permanent(format!("cannot encode the event as JSON: {e}")))?;
    Ok(body)
}

fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The error for an action an executor does not perform.
fn not_mine(executor: &str, action: &ActionConfig) -> Error {
    Error::InvalidAction(ActionConfigError::new(
        "type",
        format!(
            "{executor} does not perform {} actions",
            action.action_type()
        ),
    ))
}

#[async_trait]
impl ActionExecutor for WebhookExecutor {
    /// Performs a `webhook` action (signed with
    /// [`message_id`](WebhookExecutor::message_id) as id) or a `slack` one.
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        match action {
            ActionConfig::Webhook(w) => {
                let started = Instant::now();
                let prepared = self.prepared.get(w)?;
                // The id is sent only on signed requests.
                let id = match prepared.key {
                    Some(_) => message_id(event, &prepared.digest),
                    None => String::new(),
                };
                self.deliver(started, &prepared, event, &id, None).await
            }
            ActionConfig::Slack(s) => slack::deliver(self, event, s, None).await,
            other => Err(not_mine("the webhook executor", other)),
        }
    }

    /// As [`execute`](ActionExecutor::execute), recording the request and
    /// the answer in `exchange` (see [`Exchange`] for what is redacted).
    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        match action {
            ActionConfig::Webhook(w) => {
                let started = Instant::now();
                let prepared = self.prepared.get(w).inspect_err(|_| {
                    exchange.error_kind = Some(ErrorKind::Request);
                })?;
                let id = match prepared.key {
                    Some(_) => message_id(event, &prepared.digest),
                    None => String::new(),
                };
                self.deliver(started, &prepared, event, &id, Some(exchange))
                    .await
            }
            ActionConfig::Slack(s) => slack::deliver(self, event, s, Some(exchange)).await,
            other => Err(not_mine("the webhook executor", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_tell_actions_apart() {
        let mut event = EntityEvent::new(
            crate::traits::EventKind::Insert,
            "order",
            uuid::Uuid::nil(),
            serde_json::json!({}),
        );
        event.id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let hook = WebhookAction {
            url: "https://a.example/x".into(),
            method: "post".into(),
            headers: Default::default(),
            body_template: None,
            signing_secret: None,
        };
        let id = WebhookExecutor::message_id(&event, &hook);
        // A fixed value: the id must not change between versions either.
        assert_eq!(
            id,
            WebhookExecutor::message_id(
                &event,
                &WebhookAction {
                    method: "POST".into(),
                    signing_secret: Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
                    ..hook.clone()
                }
            )
        );
        // SHA-256 of "POST\0https://a.example/x\0", first 8 bytes.
        assert_eq!(id, "msg_0123456789abcdef0123456789abcdef_04b0c7baea14f1ca");
        let templated = WebhookAction {
            body_template: Some("{{ id }}".into()),
            ..hook.clone()
        };
        assert_ne!(id, WebhookExecutor::message_id(&event, &templated));
        let put = WebhookAction {
            method: "PUT".into(),
            ..hook
        };
        assert_ne!(id, WebhookExecutor::message_id(&event, &put));
    }

    #[test]
    fn prepared_actions_are_kept_up_to_a_bound() {
        let cache = PreparedCache::default();
        let action = |i: usize| WebhookAction {
            url: format!("http://127.0.0.1:8080/hook/{i}"),
            method: "POST".into(),
            headers: Default::default(),
            body_template: None,
            signing_secret: None,
        };
        let a = cache.get(&action(0)).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.get(&action(0)).unwrap()), "kept");
        for i in 1..PreparedCache::CAP + 10 {
            cache.get(&action(i)).unwrap();
            assert!(cache.len() <= PreparedCache::CAP);
        }
        let last = cache.get(&action(PreparedCache::CAP + 9)).unwrap();
        assert_eq!(last.url.path(), format!("/hook/{}", PreparedCache::CAP + 9));
        // A refused action is not kept.
        let before = cache.len();
        let mut bad = action(0);
        bad.url = "ftp://x".into();
        assert!(cache.get(&bad).is_err());
        assert_eq!(cache.len(), before);
    }

    #[test]
    fn zero_timeouts_are_refused() {
        assert!(WebhookExecutor::builder()
            .connect_timeout(Duration::ZERO)
            .build()
            .unwrap_err()
            .is_permanent());
        assert!(WebhookExecutor::new().is_ok());
    }
}

//! Slack incoming webhooks: a webhook with Slack's payload.

use async_trait::async_trait;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use tokio::time::Instant;

use super::{classify, elapsed_ms, not_mine, Request, WebhookExecutor};
use crate::traits::{
    request_url, template, ActionConfig, ActionExecutor, ActionResult, EntityEvent, Error,
    Exchange, Result, SlackAction,
};

/// Performs `slack` actions: a `POST` of `{"text": ..., "channel": ...}`
/// (`Content-Type: application/json`) to the incoming-webhook URL
/// (unsigned: Slack authenticates by the URL).
///
/// `text` is the rendered `message_template`, or `EVENT_TYPE entity_type
/// entity_id` without one; `channel` is sent only when set. Answers are
/// classified like any webhook's.
///
/// # Examples
///
/// ```
/// use breakwater::webhook::{SlackExecutor, WebhookExecutor};
///
/// // Shares the webhook executor's connection pool.
/// let slack = SlackExecutor::from_webhook(WebhookExecutor::new().unwrap());
/// # drop(slack);
/// ```
#[derive(Debug, Clone)]
pub struct SlackExecutor {
    http: WebhookExecutor,
}

impl SlackExecutor {
    /// A Slack executor with its own default [`WebhookExecutor`].
    ///
    /// # Errors
    ///
    /// As [`WebhookExecutor::new`].
    pub fn new() -> Result<Self> {
        WebhookExecutor::new().map(Self::from_webhook)
    }

    /// A Slack executor sending through `http` (and its pool and limits).
    pub fn from_webhook(http: WebhookExecutor) -> Self {
        Self { http }
    }
}

/// The `text` of a Slack message (also the default log line).
pub(crate) fn default_text(event: &EntityEvent) -> String {
    format!(
        "{} {} {}",
        event.event_type, event.entity_type, event.entity_id
    )
}

/// Sends a Slack action through `http`.
pub(crate) async fn deliver(
    http: &WebhookExecutor,
    event: &EntityEvent,
    action: &SlackAction,
    record: Option<&mut Exchange>,
) -> Result<ActionResult> {
    let started = Instant::now();
    let (url, _) = request_url(&action.webhook_url, "slack.webhook_url")?;
    let text = match &action.message_template {
        Some(t) => template::render("slack.message_template", t, event)?,
        None => default_text(event),
    };
    let mut payload = serde_json::json!({ "text": text });
    if let Some(channel) = &action.channel {
        payload["channel"] = channel.as_str().into();
    }
    let body = serde_json::to_vec(&payload)
        .map_err(|e| Error::permanent(format!("cannot encode the Slack message: {e}")))?;
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let delivered = http
        .send(
            Request {
                method: Method::POST,
                url,
                headers,
                body,
                sign: None,
                secret_path: true,
                // Only its content type: nothing secret to look for.
                secrets: &[],
            },
            record,
        )
        .await?;
    Ok(ActionResult {
        action_type: "slack".into(),
        success: true,
        message: classify::describe(delivered.status, &delivered.body),
        duration_ms: elapsed_ms(started),
        status_code: Some(delivered.status.as_u16()),
    })
}

#[async_trait]
impl ActionExecutor for SlackExecutor {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        match action {
            ActionConfig::Slack(s) => deliver(&self.http, event, s, None).await,
            other => Err(not_mine("the Slack executor", other)),
        }
    }

    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        match action {
            ActionConfig::Slack(s) => deliver(&self.http, event, s, Some(exchange)).await,
            other => Err(not_mine("the Slack executor", other)),
        }
    }
}

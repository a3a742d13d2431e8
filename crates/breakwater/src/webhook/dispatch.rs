//! One executor for every action type.

use async_trait::async_trait;

use super::{EmailExecutor, LogExecutor, SlackExecutor, WebhookExecutor};
use crate::traits::{
    ActionConfig, ActionExecutor, ActionResult, EntityEvent, Error, Exchange, Result,
};

/// Routes each action to its executor: `webhook` to a [`WebhookExecutor`],
/// `slack` to a [`SlackExecutor`] (sharing the webhook executor's pool),
/// `log` to a [`LogExecutor`], `email` to an [`EmailExecutor`] if one was
/// given (a permanent error otherwise). A service holds one
/// `Arc<dyn ActionExecutor>` of it, usually inside a
/// [`CircuitBreakerActionExecutor`](crate::traits::CircuitBreakerActionExecutor).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::traits::{ActionConfig, ActionExecutor, EntityEvent, EventKind, LogAction};
/// use breakwater::webhook::{Executors, WebhookExecutor};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let executors: Arc<dyn ActionExecutor> = Arc::new(Executors::new(WebhookExecutor::new().unwrap()));
/// let event = EntityEvent::new(EventKind::Insert, "order", uuid::Uuid::new_v4(), serde_json::json!({}));
/// let log = ActionConfig::Log(LogAction { level: "info".into(), message_template: None });
/// assert_eq!(executors.execute(&event, &log).await.unwrap().action_type, "log");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Executors {
    webhook: WebhookExecutor,
    slack: SlackExecutor,
    log: LogExecutor,
    email: Option<EmailExecutor>,
}

impl Executors {
    /// Webhooks and Slack through `webhook`, log lines; no email.
    pub fn new(webhook: WebhookExecutor) -> Self {
        Self {
            slack: SlackExecutor::from_webhook(webhook.clone()),
            webhook,
            log: LogExecutor,
            email: None,
        }
    }

    /// Sends `email` actions through `email`.
    #[must_use]
    pub fn with_email(mut self, email: EmailExecutor) -> Self {
        self.email = Some(email);
        self
    }

    /// The webhook executor (for [`WebhookExecutor::execute_with_id`]).
    pub fn webhook(&self) -> &WebhookExecutor {
        &self.webhook
    }
}

#[async_trait]
impl ActionExecutor for Executors {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        match action {
            ActionConfig::Webhook(_) => self.webhook.execute(event, action).await,
            ActionConfig::Slack(_) => self.slack.execute(event, action).await,
            ActionConfig::Log(_) => self.log.execute(event, action).await,
            ActionConfig::Email(_) => match &self.email {
                Some(email) => email.execute(event, action).await,
                None => Err(Error::permanent(
                    "no email executor is configured (Executors::with_email)",
                )),
            },
        }
    }
    /// Records webhook and Slack requests (see [`Exchange`]); log and email
    /// actions record nothing.
    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        match action {
            ActionConfig::Webhook(_) => {
                self.webhook.execute_recorded(event, action, exchange).await
            }
            ActionConfig::Slack(_) => self.slack.execute_recorded(event, action, exchange).await,
            _ => self.execute(event, action).await,
        }
    }
}

//! Log actions: one `tracing` event.

use async_trait::async_trait;

use super::not_mine;
use super::slack::default_text;
use crate::traits::{
    template, ActionConfig, ActionConfigError, ActionExecutor, ActionResult, EntityEvent, Result,
};

/// Performs `log` actions: one `tracing` event (target `breakwater::action`)
/// at the action's level, with the rendered `message_template` (or
/// `EVENT_TYPE entity_type entity_id`) as message and the event's id and
/// entity type as fields. The result's `message` is the logged text.
///
/// # Examples
///
/// ```
/// use breakwater::traits::{ActionConfig, ActionExecutor, EntityEvent, EventKind, LogAction};
/// use breakwater::webhook::LogExecutor;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let event = EntityEvent::new(EventKind::Delete, "user", uuid::Uuid::nil(), serde_json::json!({"name": "Ada"}));
/// let action = ActionConfig::Log(LogAction {
///     level: "warn".into(),
///     message_template: Some("{{ data.name }} was deleted".into()),
/// });
/// let result = LogExecutor.execute(&event, &action).await.unwrap();
/// assert_eq!(result.message, "Ada was deleted");
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LogExecutor;

#[async_trait]
impl ActionExecutor for LogExecutor {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        let ActionConfig::Log(log) = action else {
            return Err(not_mine("the log executor", action));
        };
        let text = match &log.message_template {
            Some(t) => template::render("log.message_template", t, event)?,
            None => default_text(event),
        };
        let (id, entity) = (event.id, event.entity_type.as_str());
        match log.level.as_str() {
            "trace" => {
                tracing::trace!(target: "breakwater::action", event_id = %id, entity_type = entity, "{text}")
            }
            "debug" => {
                tracing::debug!(target: "breakwater::action", event_id = %id, entity_type = entity, "{text}")
            }
            "info" => {
                tracing::info!(target: "breakwater::action", event_id = %id, entity_type = entity, "{text}")
            }
            "warn" => {
                tracing::warn!(target: "breakwater::action", event_id = %id, entity_type = entity, "{text}")
            }
            "error" => {
                tracing::error!(target: "breakwater::action", event_id = %id, entity_type = entity, "{text}")
            }
            other => {
                return Err(ActionConfigError::new(
                    "log.level",
                    format!("must be trace, debug, info, warn or error, got {other:?}"),
                )
                .into())
            }
        }
        Ok(ActionResult {
            action_type: "log".into(),
            success: true,
            message: text,
            duration_ms: 0,
            status_code: None,
        })
    }
}

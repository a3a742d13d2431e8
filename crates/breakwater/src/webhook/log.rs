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

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata};

    use super::*;
    use crate::traits::{EventKind, LogAction};

    /// What one `tracing` event carried.
    #[derive(Debug, Clone, PartialEq)]
    struct Line {
        level: Level,
        target: String,
        message: String,
        fields: Vec<String>,
    }

    /// A subscriber that keeps every event.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Line>>>);

    struct Fields<'a>(&'a mut String, &'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                *self.0 = format!("{value:?}");
            } else {
                self.1.push(format!("{}={value:?}", field.name()));
            }
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let (mut message, mut fields) = (String::new(), Vec::new());
            event.record(&mut Fields(&mut message, &mut fields));
            self.0.lock().unwrap().push(Line {
                level: *event.metadata().level(),
                target: event.metadata().target().to_string(),
                message,
                fields,
            });
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn run(action: &ActionConfig, event: &EntityEvent) -> (Result<ActionResult>, Vec<Line>) {
        let capture = Capture::default();
        let result = tracing::subscriber::with_default(capture.clone(), || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(LogExecutor.execute(event, action))
        });
        let lines = capture.0.lock().unwrap().clone();
        (result, lines)
    }

    #[test]
    fn logs_one_event_at_the_configured_level() {
        let mut event = EntityEvent::new(
            EventKind::Update,
            "user",
            uuid::Uuid::nil(),
            serde_json::json!({"name": "Ada"}),
        );
        event.id = uuid::Uuid::nil();
        let action = ActionConfig::Log(LogAction {
            level: "warn".into(),
            message_template: Some("{{ data.name }} changed".into()),
        });
        let (result, lines) = run(&action, &event);
        assert_eq!(result.unwrap().message, "Ada changed");
        assert_eq!(
            lines,
            [Line {
                level: Level::WARN,
                target: "breakwater::action".into(),
                message: "Ada changed".into(),
                fields: vec![
                    "event_id=00000000-0000-0000-0000-000000000000".into(),
                    "entity_type=\"user\"".into()
                ],
            }]
        );
        let plain = ActionConfig::Log(LogAction {
            level: "debug".into(),
            message_template: None,
        });
        let (result, lines) = run(&plain, &event);
        let want = "UPDATE user 00000000-0000-0000-0000-000000000000";
        assert_eq!(result.unwrap().message, want);
        assert_eq!(
            (lines[0].level, lines[0].message.as_str()),
            (Level::DEBUG, want)
        );
    }

    #[test]
    fn a_bad_level_or_another_action_type_is_refused_without_a_line() {
        let event = EntityEvent::new(
            EventKind::Insert,
            "user",
            uuid::Uuid::nil(),
            serde_json::json!({}),
        );
        let loud = ActionConfig::Log(LogAction {
            level: "loud".into(),
            message_template: None,
        });
        let (result, lines) = run(&loud, &event);
        assert!(
            matches!(result, Err(crate::traits::Error::InvalidAction(e)) if e.field == "log.level")
        );
        assert!(lines.is_empty());
        let slack = ActionConfig::Slack(crate::traits::SlackAction {
            webhook_url: "https://hooks.slack.com/x".into(),
            channel: None,
            message_template: None,
        });
        assert!(run(&slack, &event).0.unwrap_err().is_permanent());
    }
}

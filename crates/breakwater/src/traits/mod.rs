//! The host types of an observer runtime, and the breaker around its actions.
//!
//! A database change becomes an [`EntityEvent`]; observers map events to
//! actions ([`ActionConfig`]: a webhook, a Slack message, an email, a log
//! line); an [`ActionExecutor`] performs one action for one event. Wrapping
//! an executor in a [`CircuitBreakerActionExecutor`] protects every endpoint
//! it calls: a dead endpoint is refused at once instead of being hammered.
//!
//! Errors say what to do next ([`Error::is_transient`]: retry later;
//! [`Error::is_permanent`]: dead-letter now; [`Error::is_gone`]: the receiver
//! asked to be disabled; [`Error::is_circuit_open`]: retry after
//! [`Error::retry_after`], never dead-letter at once). Only transient errors
//! and timeouts count as failures for a breaker: a 400 for a bad payload says
//! nothing about the endpoint's health.
//!
//! Each HTTP action is judged by the breaker of its endpoint
//! ([`ActionConfig::endpoint`]): `scheme://host:port` of the URL as a WHATWG
//! parser (the `url` crate, as reqwest) reads it, so the key is the host the
//! request really goes to.
//!
//! # Templates
//!
//! `body_template`, `message_template` and an email's `subject` are
//! [minijinja](https://docs.rs/minijinja) templates over the event:
//! `{{ id }}`, `{{ event_type }}`, `{{ entity_type }}`, `{{ entity_id }}`,
//! `{{ data.field }}`, `{{ changes.field.old }}`, `{{ user_id }}`,
//! `{{ timestamp }}`; `{{ data | tojson }}` writes JSON. A field the event
//! does not have renders empty (however deep: `{{ data.a.b }}`), so an event
//! without an optional field still gets its action. A syntax error is refused
//! by [`ActionConfig::validate`], naming the field.

mod action;
pub(crate) mod cache;
mod endpoint;
mod error;
mod event;
mod exchange;
mod executor;
pub(crate) mod template;

#[cfg(feature = "webhook")]
pub(crate) use self::action::{signing_key, webhook_headers, webhook_method};
pub use self::action::{ActionConfig, EmailAction, LogAction, SlackAction, WebhookAction};
#[cfg(feature = "webhook")]
pub(crate) use self::endpoint::request_url;
pub use self::error::{ActionConfigError, Error, Result};
pub use self::event::{EntityEvent, EventKind, FieldChange};
pub use self::exchange::{ErrorKind, Exchange};
pub use self::executor::{ActionExecutor, ActionResult, CircuitBreakerActionExecutor};

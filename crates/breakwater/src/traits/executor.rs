//! Executors: the trait that performs actions, and the breaker around it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::action::ActionConfig;
use super::cache::BoundedCache;
use super::error::{Error, Result};
use super::event::EntityEvent;
use super::exchange::Exchange;
use crate::resilience::per_endpoint::PerEndpointCircuitBreaker;
use crate::resilience::{CircuitBreaker, Verdict};
use crate::CircuitError;

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

    /// Performs `action` for `event` as [`execute`](ActionExecutor::execute)
    /// does, and fills `exchange` with what was sent and what came back
    /// (for an attempt history). The default records nothing: an executor
    /// that speaks HTTP overrides it.
    ///
    /// # Errors
    ///
    /// As [`execute`](ActionExecutor::execute).
    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        let _ = exchange;
        self.execute(event, action).await
    }
}

#[async_trait]
impl<T: ActionExecutor + ?Sized> ActionExecutor for Arc<T> {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        (**self).execute(event, action).await
    }

    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        (**self).execute_recorded(event, action, exchange).await
    }
}

#[async_trait]
impl<T: ActionExecutor + ?Sized> ActionExecutor for Box<T> {
    async fn execute(&self, event: &EntityEvent, action: &ActionConfig) -> Result<ActionResult> {
        (**self).execute(event, action).await
    }

    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        (**self).execute_recorded(event, action, exchange).await
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
    /// The endpoints of actions that passed their checks, so that an action
    /// run for many events is checked and keyed once.
    endpoints: BoundedCache<ActionConfig, Arc<str>>,
}

/// Distinct actions whose endpoints are kept at most.
const ENDPOINTS_KEPT: usize = 1024;

impl<E> CircuitBreakerActionExecutor<E> {
    /// Guards every action of `inner` with one breaker.
    pub fn new(inner: E, circuit_breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            inner,
            guard: Guard::One(circuit_breaker),
            endpoints: BoundedCache::new(ENDPOINTS_KEPT),
        }
    }

    /// Guards each endpoint ([`ActionConfig::endpoint`]) with its own breaker.
    pub fn per_endpoint(inner: E, breakers: Arc<PerEndpointCircuitBreaker>) -> Self {
        Self {
            inner,
            guard: Guard::PerEndpoint(breakers),
            endpoints: BoundedCache::new(ENDPOINTS_KEPT),
        }
    }

    /// The wrapped executor.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The breaker that guards `action`.
    pub fn breaker_for(&self, action: &ActionConfig) -> Arc<CircuitBreaker> {
        self.breaker_of(&action.endpoint())
    }

    /// The breaker that guards the endpoint `key`.
    fn breaker_of(&self, key: &str) -> Arc<CircuitBreaker> {
        match &self.guard {
            Guard::One(b) => b.clone(),
            Guard::PerEndpoint(p) => p.get_or_create(key),
        }
    }
}

/// What a breaker's error is as an action's error.
fn action_error(endpoint: &str, e: CircuitError<Error>) -> Error {
    match e {
        CircuitError::Open { retry_after } => Error::CircuitOpen {
            endpoint: endpoint.to_string(),
            retry_after,
        },
        CircuitError::Inner(e) => e,
        CircuitError::Timeout { limit } => Error::Timeout(limit),
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
        // One parse of the action's URL both checks it and keys its breaker.
        let endpoint = self
            .endpoints
            .get_or_try_insert(action, || action.validated_endpoint().map(Arc::from))?;
        let breaker = self.breaker_of(&endpoint);
        breaker
            .call_with(classify, || self.inner.execute(event, action))
            .await
            .map_err(|e| action_error(&endpoint, e))
    }

    /// As [`execute`](ActionExecutor::execute), through the same breaker;
    /// the inner executor records the exchange. A refusal by the breaker
    /// records nothing (nothing was sent).
    async fn execute_recorded(
        &self,
        event: &EntityEvent,
        action: &ActionConfig,
        exchange: &mut Exchange,
    ) -> Result<ActionResult> {
        let endpoint = self
            .endpoints
            .get_or_try_insert(action, || action.validated_endpoint().map(Arc::from))?;
        let breaker = self.breaker_of(&endpoint);
        breaker
            .call_with(classify, || {
                self.inner.execute_recorded(event, action, exchange)
            })
            .await
            .map_err(|e| action_error(&endpoint, e))
    }
}

//! The error a call through a breaker returns.

use std::convert::Infallible;
use std::time::Duration;

/// Why a call through a [`CircuitBreaker`](crate::CircuitBreaker) did not
/// return the operation's value.
///
/// # Examples
///
/// ```
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
/// breaker.force_open();
/// let err = breaker.call(|| async { Ok::<_, std::io::Error>(1) }).await.unwrap_err();
/// assert!(err.is_open());
/// assert_eq!(err.to_string(), "circuit open");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CircuitError<E> {
    /// The breaker refused the call without running it.
    #[error("circuit open{}", retry_suffix(.retry_after))]
    Open {
        /// Time left until the breaker lets probes through; `None` when it
        /// was forced open or all probe slots of a HalfOpen breaker are busy.
        retry_after: Option<Duration>,
    },
    /// The operation ran and failed with this error (shown as it is).
    #[error(transparent)]
    Inner(E),
    /// The operation ran longer than its time limit and was cancelled:
    /// `call_timeout_ms`, or for a probe `probe_timeout_ms` (by default the
    /// opening that just ended), whichever is shorter.
    #[error("call timed out after {limit:?}")]
    Timeout {
        /// The limit that fired.
        limit: Duration,
    },
}

impl<E> CircuitError<E> {
    /// Whether the breaker refused the call.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }

    /// Whether the call was cancelled by a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The operation's own error, if it ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The operation's own error, by reference.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The wait a rejection advises before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Maps the operation's error, keeping rejections and timeouts.
    pub fn map_inner<F>(self, f: impl FnOnce(E) -> F) -> CircuitError<F> {
        match self {
            Self::Open { retry_after } => CircuitError::Open { retry_after },
            Self::Inner(e) => CircuitError::Inner(f(e)),
            Self::Timeout { limit } => CircuitError::Timeout { limit },
        }
    }
}

impl CircuitError<Infallible> {
    /// Widens a rejection (which never holds an operation error) to any error type.
    pub fn widen<E>(self) -> CircuitError<E> {
        self.map_inner(|never| match never {})
    }
}

/// `", retry after 3s"`, or nothing when no wait is known.
pub(crate) fn retry_suffix(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", retry after {d:?}"))
        .unwrap_or_default()
}

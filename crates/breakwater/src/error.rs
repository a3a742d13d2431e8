//! The error a call through a breaker returns.

use std::convert::Infallible;
use std::fmt;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitError<E> {
    /// The breaker refused the call without running it.
    Open {
        /// Time left until the breaker lets probes through; `None` when it
        /// was forced open or all probe slots of a HalfOpen breaker are busy.
        retry_after: Option<Duration>,
    },
    /// The operation ran and failed with this error.
    Inner(E),
    /// The operation ran longer than its time limit and was cancelled:
    /// `call_timeout_ms`, or for a probe `probe_timeout_ms` (by default the
    /// opening that just ended), whichever is shorter.
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

impl<E: fmt::Display> fmt::Display for CircuitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open {
                retry_after: Some(d),
            } => write!(f, "circuit open, retry after {d:?}"),
            Self::Open { retry_after: None } => f.write_str("circuit open"),
            Self::Inner(e) => e.fmt(f),
            Self::Timeout { limit } => write!(f, "call timed out after {limit:?}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CircuitError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: Display already shows the inner error's message.
            Self::Inner(e) => e.source(),
            _ => None,
        }
    }
}

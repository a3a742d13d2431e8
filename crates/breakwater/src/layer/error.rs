//! The errors the layer adds to its inner service's own.
//!
//! Both reach the caller boxed in a [`BoxError`](super::BoxError); find them
//! with [`downcast_ref`](std::error::Error#method.downcast_ref). Every other
//! error is the inner service's, passed through untouched.

use crate::error::retry_suffix;
use std::time::Duration;

/// The breaker refused the request: the inner service was not called.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::layer::{BoxError, CircuitOpen};
///
/// let err: BoxError = CircuitOpen::new(Some(Duration::from_secs(3))).into();
/// let open = err.downcast_ref::<CircuitOpen>().expect("a rejection");
/// assert_eq!(open.retry_after, Some(Duration::from_secs(3)));
/// assert_eq!(err.to_string(), "circuit open, retry after 3s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("circuit open{}", retry_suffix(.retry_after))]
#[non_exhaustive]
pub struct CircuitOpen {
    /// Time left until the breaker lets probes through; `None` when it was
    /// forced open or all probe slots of a HalfOpen breaker are busy.
    pub retry_after: Option<Duration>,
}

impl CircuitOpen {
    /// A rejection that advises waiting `retry_after`.
    pub const fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }
}

/// The inner service's response took longer than the breaker's time limit
/// (`call_timeout_ms`, or for a probe `probe_timeout_ms`); the request was
/// cancelled and counted as a failure.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::layer::{BoxError, CallTimeout};
///
/// let err: BoxError = CallTimeout::new(Duration::from_millis(250)).into();
/// assert_eq!(err.downcast_ref::<CallTimeout>().unwrap().limit, Duration::from_millis(250));
/// assert_eq!(err.to_string(), "call timed out after 250ms");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("call timed out after {limit:?}")]
#[non_exhaustive]
pub struct CallTimeout {
    /// The limit the call ran into.
    pub limit: Duration,
}

impl CallTimeout {
    /// A timeout after `limit`.
    pub const fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

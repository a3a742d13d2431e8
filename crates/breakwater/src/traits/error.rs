//! The crate `Error`: why an action failed, and so what to do next.

use std::time::Duration;

use crate::resilience::Verdict;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an action failed, and so what to do next.
///
/// | kind | predicate | what to do | counts for a breaker |
/// | --- | --- | --- | --- |
/// | [`Transient`](Error::Transient), [`Timeout`](Error::Timeout) | [`is_transient`](Error::is_transient) | retry later (after [`retry_after`](Error::retry_after) if given) | failure |
/// | [`Permanent`](Error::Permanent), [`InvalidAction`](Error::InvalidAction) | [`is_permanent`](Error::is_permanent) | dead-letter at once | ignored |
/// | [`Gone`](Error::Gone) | [`is_gone`](Error::is_gone) | disable the endpoint (keep its actions for replay) | ignored |
/// | [`CircuitOpen`](Error::CircuitOpen) | [`is_circuit_open`](Error::is_circuit_open) | retry after `retry_after`, never dead-letter at once | ignored |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use breakwater::traits::Error;
///
/// let busy = Error::from_status(429, "slow down", Some(Duration::from_secs(3)));
/// assert!(busy.is_transient());
/// assert_eq!(busy.retry_after(), Some(Duration::from_secs(3)));
/// assert!(Error::from_status(404, "no such hook", None).is_permanent());
/// let gone = Error::from_status(410, "disabled by the receiver", None);
/// assert!(gone.is_gone() && !gone.is_transient() && !gone.is_permanent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// It may work later: retry (5xx, 408, 429, connection errors).
    #[error("transient failure: {message}")]
    Transient {
        /// What went wrong.
        message: String,
        /// The HTTP status, if any.
        status: Option<u16>,
        /// How long the other side asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// It will not work however often it is tried (3xx, 4xx other than
    /// 408/410/429, a bad configuration): dead-letter it.
    #[error("permanent failure: {message}")]
    Permanent {
        /// What went wrong.
        message: String,
        /// The HTTP status, if any.
        status: Option<u16>,
    },
    /// The receiver answered `410 Gone`: it asks to be sent nothing more.
    /// Neither transient nor permanent: disable the endpoint, keep its
    /// actions for replay. Not a failure for a breaker (the endpoint is up).
    #[error("endpoint gone: {message}")]
    Gone {
        /// What the receiver said.
        message: String,
    },
    /// The action took too long and was cancelled: retry.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The endpoint's circuit is open: the action did not run. Retry after
    /// `retry_after`; never dead-letter at once, never count as a failure.
    #[error("circuit open for {endpoint}{}", fmt_retry(*.retry_after))]
    CircuitOpen {
        /// The endpoint whose breaker refused.
        endpoint: String,
        /// Time until the breaker lets probes through, when known.
        retry_after: Option<Duration>,
    },
    /// The action's configuration is invalid: permanent.
    #[error("invalid action: {0}")]
    InvalidAction(#[from] ActionConfigError),
}

fn fmt_retry(d: Option<Duration>) -> String {
    d.map(|d| format!(", retry after {d:?}"))
        .unwrap_or_default()
}

impl Error {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            status: None,
        }
    }

    /// The failure an HTTP status means: 408, 429 and 5xx are transient
    /// (with `retry_after`, if given); 410 is [`Error::Gone`]; every other
    /// status (3xx, other 4xx, and anything outside `100..=599`, which no
    /// server may send) is permanent.
    pub fn from_status(
        status: u16,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        match status {
            408 | 429 | 500..=599 => Self::Transient {
                message: message.into(),
                status: Some(status),
                retry_after,
            },
            410 => Self::Gone {
                message: message.into(),
            },
            _ => Self::Permanent {
                message: message.into(),
                status: Some(status),
            },
        }
    }

    /// Retrying later may work (transient failures and timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Timeout(_))
    }

    /// Retrying will not work: dead-letter it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. } | Self::InvalidAction(_))
    }

    /// The receiver answered `410 Gone`: disable the endpoint.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone { .. })
    }

    /// A breaker refused the action without running it.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. })
    }

    /// How long to wait before retrying, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } | Self::CircuitOpen { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status behind the error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Transient { status, .. } | Self::Permanent { status, .. } => *status,
            Self::Gone { .. } => Some(410),
            _ => None,
        }
    }

    /// How a breaker counts this error: transient failures and timeouts are
    /// failures; permanent errors, `410 Gone` and rejections by another
    /// breaker say nothing about the endpoint's health and are ignored.
    pub fn verdict(&self) -> Verdict {
        if self.is_transient() {
            Verdict::Failure
        } else {
            Verdict::Ignore
        }
    }
}

/// An action configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ActionConfigError {
    /// The field at fault, e.g. `webhook.url`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ActionConfigError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_to_do_next() {
        assert!(Error::from_status(503, "x", None).is_transient());
        assert!(Error::from_status(429, "x", Some(Duration::from_secs(3))).is_transient());
        assert_eq!(
            Error::from_status(429, "x", Some(Duration::from_secs(3))).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert!(Error::from_status(408, "x", None).is_transient());
        assert!(Error::from_status(400, "x", None).is_permanent());
        assert!(Error::from_status(404, "x", None).is_permanent());
        assert!(Error::from_status(301, "x", None).is_permanent());
        let gone = Error::from_status(410, "x", None);
        assert!(gone.is_gone() && !gone.is_transient() && !gone.is_permanent());
        assert_eq!(gone.verdict(), Verdict::Ignore);
        assert_eq!(gone.status(), Some(410));
        let open = Error::CircuitOpen {
            endpoint: "http://a:80".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(open.is_circuit_open() && !open.is_permanent() && !open.is_transient());
        assert_eq!(
            open.to_string(),
            "circuit open for http://a:80, retry after 2s"
        );
        assert_eq!(open.verdict(), Verdict::Ignore);
    }

    /// Regression: `from_status(999)` was judged transient (`status >= 500`).
    #[test]
    fn statuses_outside_100_to_599_are_not_transient() {
        for status in [0, 1, 99, 600, 999, u16::MAX] {
            let e = Error::from_status(status, "x", Some(Duration::from_secs(1)));
            assert!(!e.is_transient(), "{status}");
            assert!(e.is_permanent(), "{status}");
            assert_eq!(e.retry_after(), None, "{status}");
        }
        assert!(Error::from_status(599, "x", None).is_transient());
    }
}

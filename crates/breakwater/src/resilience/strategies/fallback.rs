//! Fallbacks: the answer a [`ResilientExecutor`](super::ResilientExecutor)
//! gives instead of an error, and when it gives it.

use std::fmt;
use std::sync::Arc;

use crate::error::CircuitError;

/// A fallback computed on demand, for [`ResilienceStrategy::FallbackWith`](super::ResilienceStrategy::FallbackWith).
pub type FallbackFn<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// When a [`Fallback`] answers instead of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackWhen {
    /// Only when the breaker refused the call (the circuit is open, or it
    /// opened before a retry). A call that ran and failed returns its error.
    Open,
    /// When the breaker refused the call, and also when the call ran and
    /// failed (after its retries) or timed out.
    OpenOrFailure,
}

/// A fallback answer and when it applies, for
/// [`ResilientExecutor::with_fallback`](super::ResilientExecutor::with_fallback).
///
/// A fixed value ([`on_open`](Self::on_open),
/// [`on_open_or_failure`](Self::on_open_or_failure)) is cloned for each
/// answer, so it needs `T: Clone`; a computed one
/// ([`on_open_with`](Self::on_open_with),
/// [`on_open_or_failure_with`](Self::on_open_or_failure_with)) does not.
///
/// # Examples
///
/// ```
/// use breakwater::{Fallback, FallbackWhen};
///
/// let cached = Fallback::on_open("cached");
/// assert_eq!(cached.when(), FallbackWhen::Open);
/// let empty = Fallback::on_open_or_failure_with(Vec::<u8>::new);
/// assert_eq!(empty.when(), FallbackWhen::OpenOrFailure);
/// ```
pub struct Fallback<T> {
    source: Source<T>,
    when: FallbackWhen,
}

enum Source<T> {
    /// A value and how to clone it (so that only building one needs `Clone`).
    Value {
        value: T,
        clone: fn(&T) -> T,
    },
    With(FallbackFn<T>),
}

impl<T: Clone> Fallback<T> {
    /// A clone of `value` whenever the breaker refuses the call.
    pub fn on_open(value: T) -> Self {
        Self::value(value, FallbackWhen::Open)
    }

    /// A clone of `value` whenever the breaker refuses the call or the call
    /// fails.
    pub fn on_open_or_failure(value: T) -> Self {
        Self::value(value, FallbackWhen::OpenOrFailure)
    }

    fn value(value: T, when: FallbackWhen) -> Self {
        Self {
            source: Source::Value {
                value,
                clone: T::clone,
            },
            when,
        }
    }
}

impl<T> Fallback<T> {
    /// The value of `f`, computed each time the breaker refuses the call.
    pub fn on_open_with(f: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::computed(Arc::new(f), FallbackWhen::Open)
    }

    /// The value of `f`, computed each time the breaker refuses the call or
    /// the call fails.
    pub fn on_open_or_failure_with(f: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::computed(Arc::new(f), FallbackWhen::OpenOrFailure)
    }

    pub(super) fn computed(f: FallbackFn<T>, when: FallbackWhen) -> Self {
        Self {
            source: Source::With(f),
            when,
        }
    }

    /// When this fallback answers.
    pub fn when(&self) -> FallbackWhen {
        self.when
    }

    /// Whether this fallback answers instead of `err`.
    pub(super) fn covers<E>(&self, err: &CircuitError<E>) -> bool {
        match self.when {
            FallbackWhen::Open => err.is_open(),
            FallbackWhen::OpenOrFailure => true,
        }
    }

    /// A fresh fallback value.
    pub(super) fn get(&self) -> T {
        match &self.source {
            Source::Value { value, clone } => clone(value),
            Source::With(f) => f(),
        }
    }
}

impl<T> fmt::Debug for Fallback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Value { .. } => "value",
            Source::With(_) => "computed",
        };
        f.debug_struct("Fallback")
            .field("source", &source)
            .field("when", &self.when)
            .finish()
    }
}

/// What an execution answered: the operation's own value, or a fallback
/// and the error it stands in for. From
/// [`ResilientExecutor::execute_outcome`](super::ResilientExecutor::execute_outcome).
///
/// # Examples
///
/// ```
/// use breakwater::CircuitError;
/// use breakwater::Outcome;
///
/// let live: Outcome<&str, ()> = Outcome::Live("fresh");
/// let stale: Outcome<&str, ()> = Outcome::Fallback {
///     value: "cached",
///     cause: CircuitError::Open { retry_after: None },
/// };
/// assert!(live.is_live() && stale.is_fallback());
/// assert!(stale.cause().is_some_and(CircuitError::is_open));
/// assert_eq!(stale.into_value(), "cached");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T, E> {
    /// The operation ran and returned this value.
    Live(T),
    /// A fallback answered.
    Fallback {
        /// The fallback value.
        value: T,
        /// What the fallback stands in for: [`CircuitError::Open`] when the
        /// breaker refused the call, otherwise the failed call's error.
        cause: CircuitError<E>,
    },
}

impl<T, E> Outcome<T, E> {
    /// Whether the operation's own value answered.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live(_))
    }

    /// Whether a fallback answered.
    pub fn is_fallback(&self) -> bool {
        matches!(self, Self::Fallback { .. })
    }

    /// The value, live or fallback.
    pub fn value(&self) -> &T {
        match self {
            Self::Live(value) | Self::Fallback { value, .. } => value,
        }
    }

    /// The value, live or fallback.
    pub fn into_value(self) -> T {
        match self {
            Self::Live(value) | Self::Fallback { value, .. } => value,
        }
    }

    /// The error a fallback stands in for; `None` for a live value.
    pub fn cause(&self) -> Option<&CircuitError<E>> {
        match self {
            Self::Live(_) => None,
            Self::Fallback { cause, .. } => Some(cause),
        }
    }
}

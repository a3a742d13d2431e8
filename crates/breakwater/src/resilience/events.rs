//! Transition events.
//!
//! Every change of state is published once, after the compare-exchange that
//! made it, to the registered listeners and to the broadcast channel of
//! [`CircuitBreaker::subscribe`](super::CircuitBreaker::subscribe). Nothing is
//! published under a lock, a breaker with no listener pays one load per
//! transition (and one pointer of memory), and a listener that panics is logged and skipped: it can
//! neither stop the transition nor leave the breaker unusable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::state::CircuitState;

/// One change of a breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// When it happened, on the tokio clock.
    pub at: Instant,
    /// For a transition to Open that will end by itself: how long it lasts.
    pub open_for: Option<Duration>,
}

/// Receives a breaker's transitions.
///
/// Implemented for every `Fn(&Transition) + Send + Sync`. Called on the
/// thread that made the transition, after it happened and outside any lock;
/// keep it short (hand work to a channel if it is not).
pub trait TransitionListener: Send + Sync + 'static {
    /// Called once per transition.
    fn on_transition(&self, transition: &Transition);
}

impl<F: Fn(&Transition) + Send + Sync + 'static> TransitionListener for F {
    fn on_transition(&self, transition: &Transition) {
        self(transition)
    }
}

/// Capacity of the broadcast channel behind `subscribe`.
const CHANNEL_CAPACITY: usize = 64;

type Listeners = Arc<[Arc<dyn TransitionListener>]>;

/// The listeners of one breaker, allocated on the first `add` or
/// `subscribe`: a breaker nobody listens to carries one pointer.
#[derive(Default)]
pub(crate) struct Events {
    inner: OnceLock<Box<Inner>>,
}

#[derive(Default)]
struct Inner {
    listeners: RwLock<Option<Listeners>>,
    channel: OnceLock<broadcast::Sender<Transition>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("listening", &self.inner.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Events {
    fn inner(&self) -> &Inner {
        self.inner.get_or_init(Box::default)
    }

    pub(crate) fn add(&self, listener: Arc<dyn TransitionListener>) {
        // A poisoned lock only means a panic elsewhere while it was held;
        // the list itself is always whole, so keep using it.
        let mut guard = self
            .inner()
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = guard.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        list.push(listener);
        *guard = Some(list.into());
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner()
            .channel
            .get_or_init(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    pub(crate) fn publish(&self, t: &Transition) {
        let Some(inner) = self.inner.get() else {
            return;
        };
        let listeners = inner
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for l in listeners.iter().flat_map(|l| l.iter()) {
            if catch_unwind(AssertUnwindSafe(|| l.on_transition(t))).is_err() {
                tracing::error!(from = %t.from, to = %t.to, "a transition listener panicked");
            }
        }
        if let Some(tx) = inner.channel.get() {
            // No receiver is not an error: nobody is listening right now.
            let _ = tx.send(*t);
        }
    }
}

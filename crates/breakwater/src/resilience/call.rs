//! The future of [`CircuitBreaker::call`](super::CircuitBreaker::call) and
//! [`call_with`](super::CircuitBreaker::call_with).
//!
//! Written by hand rather than as an `async fn` so that it stays small: an
//! `async fn` keeps the timer of a time-limited call (a tokio `Sleep`) and
//! the permit in separate places of its state, and every move of the future
//! (into `.await`, `now_or_never`, a task) copies all of it. Here the timer
//! is an `Option<Sleep>` made only when a time-limited call's future first
//! returns `Pending` (a call that is ready at once, the common case of a
//! probe, never makes one), and the permit is a two-word [`Claim`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::core::Refusal;
use super::permit::Claim;
use super::{refused, CircuitError, Shared, Verdict};

pin_project! {
    /// The future of [`CircuitBreaker::call`](super::CircuitBreaker::call)
    /// and [`call_with`](super::CircuitBreaker::call_with).
    ///
    /// It admits the call on its first poll (a future that is never polled
    /// takes no permit), runs it under its time limit if it has one, and
    /// records how its result counts. Dropping it before it completes
    /// records nothing and frees its probe slot; a panic of `f`, of its
    /// future or of the classifier is recorded as a failure.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub(super) struct CallFuture<'a, F, Fut, C> {
        shared: &'a Shared,
        // Armed from admission until the outcome is recorded.
        claim: Claim,
        // `Some` until the first poll.
        f: Option<F>,
        // `Some` until the outcome is recorded.
        classify: Option<C>,
        // `Some` while the call runs.
        #[pin]
        fut: Option<Fut>,
        // The time limit, once the call's future has been `Pending`.
        #[pin]
        timer: Option<Sleep>,
    }

    impl<F, Fut, C> PinnedDrop for CallFuture<'_, F, Fut, C> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.fut.is_none() && !this.claim.is_armed() {
                // Done, or never polled: nothing to release.
                return;
            }
            // The call's future goes first, then its claim, which is
            // released as cancelled if not recorded yet (or recorded as a
            // failure if the thread unwinds, the future's own drop
            // included), as the locals of an `async fn` would be.
            let _claim = OnPanic {
                shared: this.shared,
                claim: this.claim,
            };
            this.fut.set(None);
        }
    }
}

impl<F, Fut, C> std::fmt::Debug for CallFuture<'_, F, Fut, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFuture")
            .field("started", &self.f.is_none())
            .field("done", &(self.f.is_none() && self.fut.is_none()))
            .finish_non_exhaustive()
    }
}

impl<'a, F, Fut, C> CallFuture<'a, F, Fut, C> {
    pub(super) fn new(shared: &'a Shared, classify: C, f: F) -> Self {
        Self {
            shared,
            claim: Claim::unarmed(),
            f: Some(f),
            classify: Some(classify),
            fut: None,
            timer: None,
        }
    }
}

/// The output of a refused call, built out of line: built in the same
/// place as an admitted call's output, the two share their stores, and an
/// admitted call then writes words that only a refusal needs (which a
/// caller reading the output whole must wait for).
#[cold]
#[inline(never)]
fn refused_poll<T, E>(refusal: Refusal) -> Poll<Result<T, CircuitError<E>>> {
    Poll::Ready(Err(refused(refusal)))
}

/// Releases a claim when dropped, as dropping a permit would: a failure if
/// the thread unwinds (a panic in the call, its future or its classifier),
/// a cancellation if not, nothing if the outcome is recorded. `poll`
/// forgets it on the normal path, where it costs nothing.
struct OnPanic<'s, 'c> {
    shared: &'s Shared,
    claim: &'c mut Claim,
}

impl Drop for OnPanic<'_, '_> {
    fn drop(&mut self) {
        self.claim.on_drop(self.shared);
    }
}

impl<F, Fut, T, E, C> Future for CallFuture<'_, F, Fut, C>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: FnOnce(&Result<T, E>) -> Verdict,
{
    type Output = Result<T, CircuitError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = *this.shared;
        let mut deadline = None;
        if let Some(f) = this.f.take() {
            let ticket = match shared
                .core
                .acquire(&mut shared.lazy_now(), &mut |c| shared.publish(c))
            {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    *this.classify = None;
                    return refused_poll(refusal);
                }
            };
            deadline = this.claim.arm(shared, ticket);
            let guard = OnPanic {
                shared,
                claim: &mut *this.claim,
            };
            this.fut.set(Some(f()));
            std::mem::forget(guard);
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            panic!("`CircuitBreaker::call` future polled after completion");
        };
        let guard = OnPanic {
            shared,
            claim: &mut *this.claim,
        };
        let polled = fut.poll(cx);
        std::mem::forget(guard);
        let result = match polled {
            Poll::Ready(result) => result,
            Poll::Pending => {
                if let Some(deadline) = deadline {
                    // The first `Pending` of a time-limited call: its timer,
                    // for the deadline set when it was admitted.
                    this.timer.set(Some(tokio::time::sleep_until(deadline)));
                }
                let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                    return Poll::Pending;
                };
                let deadline = timer.deadline();
                // Unconstrained by tokio's cooperative budget, as
                // `tokio::time::timeout` polls its timer once the inner
                // future spent the budget: a call that always spends it
                // still times out.
                let mut timer = tokio::task::unconstrained(timer);
                if Pin::new(&mut timer).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.fut.set(None);
                let limit = this.claim.limit_of(shared, deadline);
                this.timer.set(None);
                *this.classify = None;
                this.claim.record(shared, Verdict::Failure);
                return Poll::Ready(Err(CircuitError::Timeout { limit }));
            }
        };
        this.fut.set(None);
        if this.timer.is_some() {
            this.timer.set(None);
        }
        let classify = this.classify.take().expect("set until recorded");
        let guard = OnPanic {
            shared,
            claim: &mut *this.claim,
        };
        let verdict = classify(&result);
        std::mem::forget(guard);
        this.claim.record(shared, verdict);
        Poll::Ready(result.map_err(CircuitError::Inner))
    }
}

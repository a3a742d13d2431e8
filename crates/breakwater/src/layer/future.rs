//! The response future of the breaker services.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::classify::Classify;
use super::error::{CallTimeout, CircuitOpen};
use super::BoxError;
use crate::resilience::{CircuitBreaker, OwnedPermit};

pin_project! {
    /// The response future of [`CircuitBreakerService`](super::CircuitBreakerService)
    /// and [`PerKeyCircuitBreakerService`](super::PerKeyCircuitBreakerService).
    ///
    /// Drives the inner service's future under the breaker's time limit,
    /// then records how its result counts. Dropping it before it completes
    /// records nothing and frees a probe slot (cancellation).
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Called {
            #[pin]
            fut: F,
            // Inline (no allocation); only set when the permit has a limit.
            #[pin]
            deadline: Option<Sleep>,
            limit: Duration,
            // `None` once the outcome is recorded.
            permit: Option<OwnedPermit>,
            classify: C,
            // The registry's handle to the breaker, held by a per-key
            // request until it completes, so that the registry does not
            // evict the breaker its outcome is for.
            keep: Option<Arc<CircuitBreaker>>,
        },
        Rejected {
            error: CircuitOpen,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    /// The future of a request the breaker admitted with `permit`.
    ///
    /// # Panics
    ///
    /// If the permit has a time limit and no tokio runtime with the time
    /// driver is running.
    pub(crate) fn called(fut: F, permit: OwnedPermit, classify: C) -> Self {
        let limit = permit.time_limit();
        Self {
            state: State::Called {
                fut,
                deadline: limit.map(tokio::time::sleep),
                limit: limit.unwrap_or_default(),
                permit: Some(permit),
                classify,
                keep: None,
            },
        }
    }

    /// As [`called`](Self::called), holding `breaker` (the registry's
    /// handle) until the response is done.
    pub(crate) fn called_keeping(
        fut: F,
        permit: OwnedPermit,
        classify: C,
        breaker: Arc<CircuitBreaker>,
    ) -> Self {
        let mut this = Self::called(fut, permit, classify);
        if let State::Called { keep, .. } = &mut this.state {
            *keep = Some(breaker);
        }
        this
    }

    /// The future of a request the breaker refused.
    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            state: State::Rejected { error },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                fut,
                deadline,
                limit,
                permit,
                classify,
                keep,
            } => {
                let polled = {
                    // A panic in the inner future counts as a failure and
                    // goes on to the caller.
                    let _guard = FailOnPanic(&mut *permit);
                    fut.poll(cx)
                };
                if let Poll::Ready(result) = polled {
                    if let Some(permit) = permit.take() {
                        permit.record(classify.classify(&result));
                    }
                    // Recorded: the registry may let the breaker go.
                    *keep = None;
                    return Poll::Ready(result.map_err(Into::into));
                }
                if let Some(deadline) = deadline.as_pin_mut() {
                    if deadline.poll(cx).is_ready() {
                        if let Some(permit) = permit.take() {
                            permit.failure();
                        }
                        *keep = None;
                        return Poll::Ready(Err(CallTimeout::new(*limit).into()));
                    }
                }
                Poll::Pending
            }
            StateProj::Rejected { error } => Poll::Ready(Err((*error).into())),
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called {
                permit: Some(_), ..
            } => "called",
            State::Called { permit: None, .. } => "done",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Records a failure if the inner future panics while it is polled.
///
/// The permit's own `Drop` tells a panic from a cancellation only while the
/// panic unwinds; a caller that catches it first (`catch_unwind`) drops the
/// future later, which would look like a cancellation.
struct FailOnPanic<'a>(&'a mut Option<OwnedPermit>);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(permit) = self.0.take() {
                permit.failure();
            }
        }
    }
}

//! A tower middleware that guards a [`Service`] with a circuit breaker
//! (feature `tower`).
//!
//! [`CircuitBreakerLayer`] wraps services in a [`CircuitBreakerService`]
//! that shares one [`CircuitBreaker`]. [`PerKeyCircuitBreakerLayer`] picks
//! the breaker of each request by a key (a host, a route) from a
//! [`PerEndpointCircuitBreaker`](crate::resilience::per_endpoint::PerEndpointCircuitBreaker),
//! so one failing downstream does not cut off the others; the key is
//! extracted and its breaker looked up once per request, in `call`.
//!
//! # Semantics
//!
//! * **Where rejections happen.** A refused request gets a future that is
//!   ready at once with a [`CircuitOpen`] error carrying `retry_after`, and
//!   the inner service is not called. [`CircuitBreakerService::poll_ready`]
//!   first asks the breaker (taking nothing): while it refuses calls (Open,
//!   or HalfOpen with every probe slot busy) the service is ready at once
//!   without waiting for the inner service, and the next `call` is that
//!   rejection, so an Open breaker fails fast even in front of an inner
//!   service that is never ready. (The inner service is asked anyway,
//!   without waiting: if it was ready and the open timeout has run out by
//!   the time of the `call`, the breaker admits that call as a probe.)
//!   Otherwise `poll_ready` waits for the inner
//!   service (backpressure is unchanged) and the breaker decides in `call`;
//!   a probe slot is thus only taken by a request that exists. A rejection
//!   decided in `call` keeps the readiness the inner service granted for the
//!   next request. The per-key service learns its key from the request, so
//!   its `poll_ready` always waits for the inner service and its breaker
//!   decides in `call`.
//! * **What counts as a failure.** A [`Classify`] sees the inner service's
//!   result and gives a [`Verdict`](crate::Verdict): [`AllErrors`] (the
//!   default) counts every `Err`; [`HttpStatus`] also counts 5xx, 408 and
//!   429 responses; a closure can ignore results that say nothing about the
//!   service's health (a 400 for a bad payload). A request that runs past the breaker's time
//!   limit (`call_timeout_ms`; for a probe `probe_timeout_ms`, by default
//!   the opening that just ended) is cancelled with a [`CallTimeout`] error
//!   and counts as a failure. A panic in the inner future counts as a
//!   failure and goes on to the caller. Rejections and `poll_ready` errors
//!   are not outcomes and never move the failure rate (rejections show in
//!   the breaker's `blocked` count).
//! * **When a call is judged.** The breaker judges a request when the inner
//!   service's future completes: for an HTTP client or server, when the
//!   response *head* (status and headers) arrives. The body is streamed
//!   afterwards, outside the breaker: a body that stalls or fails half-way
//!   is neither a failure of the breaker nor cut off by `call_timeout_ms`.
//!   Bound body reads on their own (a `tokio::time::timeout` around the
//!   read, or tower-http's `TimeoutBody`), and if a broken body should count,
//!   read it inside the service (e.g. a `map_response` that buffers it)
//!   before the breaker sees the response.
//! * **Cancellation.** Dropping a response future before it completes
//!   records nothing and frees its probe slot, like dropping any breaker
//!   [`Permit`](crate::Permit).
//! * **Errors.** The services' error is a [`BoxError`], the tower
//!   convention: the inner service's errors pass through untouched (only
//!   boxed), and the layer's own two, [`CircuitOpen`] and [`CallTimeout`],
//!   are small structs to find with `downcast_ref`.
//! * **Cost.** A Closed request costs the breaker's admission (one atomic
//!   load), a reference count for its permit, the recording of its outcome
//!   and, when a time limit applies, a timer entry: no lock, no allocation.
//!   A per-key request also holds the registry's handle to its breaker
//!   until it completes, so that the breaker is not evicted under it.
//!   A rejection allocates only its boxed error.
//!
//! # With axum
//!
//! An axum `Router` needs services whose error is `Infallible`; the
//! breaker's is a [`BoxError`]. Put axum's `HandleErrorLayer` with
//! [`handle_error`] in front of the breaker: a rejection becomes `503
//! Service Unavailable` with `Retry-After`, a call timeout `503` as well
//! (see [`error_response`]):
//!
//! ```
//! use std::sync::Arc;
//! use axum::{error_handling::HandleErrorLayer, routing::get, Router};
//! use breakwater::{CircuitBreaker, CircuitBreakerConfig};
//! use breakwater::layer::{handle_error, CircuitBreakerLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).route_layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(handle_error))
//!         .layer(CircuitBreakerLayer::new(breaker.clone())),
//! );
//!
//! breaker.force_open();
//! let res = app.oneshot(http::Request::new(axum::body::Body::empty())).await.unwrap();
//! assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
//! # }
//! ```
//!
//! # Panics
//!
//! A request with a time limit (all probes, every request when
//! `call_timeout_ms` is set) must be called inside a tokio runtime with the
//! time driver enabled.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
//! use breakwater::layer::{CircuitBreakerLayer, CircuitOpen};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
//!     sample_size: 2,
//!     open_timeout_ms: 10_000,
//!     jitter_ratio: 0.0,
//!     ..Default::default()
//! }));
//! let flaky = tower::service_fn(|fail: bool| async move {
//!     if fail { Err(std::io::Error::other("down")) } else { Ok("up") }
//! });
//! let svc = CircuitBreakerLayer::new(breaker.clone()).layer(flaky);
//!
//! // The inner error comes back as it was, boxed.
//! let err = svc.clone().oneshot(true).await.unwrap_err();
//! assert!(err.downcast_ref::<std::io::Error>().is_some());
//! let _ = svc.clone().oneshot(true).await;
//! assert_eq!(breaker.state(), CircuitState::Open);
//!
//! // Open: refused without calling the inner service.
//! let err = svc.clone().oneshot(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("a rejection");
//! assert_eq!(open.retry_after, Some(Duration::from_secs(10)));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

mod classify;
mod error;
mod future;
// The tower layout: each middleware keeps its `Layer` in `layer.rs`.
#[allow(clippy::module_inception)]
mod layer;
mod per_key;
mod response;

pub use self::classify::{AllErrors, Classify, HasStatus, HttpStatus};
pub use self::error::{CallTimeout, CircuitOpen};
pub use self::future::ResponseFuture;
pub use self::layer::CircuitBreakerLayer;
pub use self::per_key::{PerKeyCircuitBreakerLayer, PerKeyCircuitBreakerService};
pub use self::response::{error_response, handle_error};
use crate::resilience::CircuitBreaker;

/// The error type of the breaker services: the inner service's error or
/// one of the layer's own, boxed (the tower convention).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A [`CircuitBreakerLayer`] for HTTP services, classifying by status.
pub type HttpCircuitBreakerLayer = CircuitBreakerLayer<HttpStatus>;

/// A [`CircuitBreakerService`] for HTTP services, classifying by status.
pub type HttpCircuitBreakerService<S> = CircuitBreakerService<S, HttpStatus>;

/// A [`Service`] that calls its inner service only while a
/// [`CircuitBreaker`] admits the request; see the [module docs](self).
pub struct CircuitBreakerService<S, C = AllErrors> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classify: C,
    /// Set by a `poll_ready` that found the breaker refusing and the inner
    /// service not ready (and so did not wait for it): the next `call` is a
    /// rejection.
    refusing: bool,
}

impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    /// A clone of the service; it must be made ready on its own.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            refusing: false,
        }
    }
}

impl<S> CircuitBreakerService<S> {
    /// Guards `inner` with `breaker`, counting every `Err` as a failure.
    pub fn new(inner: S, breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            inner,
            breaker,
            classify: AllErrors,
            refusing: false,
        }
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// The same service with `classify` deciding how results count.
    pub fn classify<D>(self, classify: D) -> CircuitBreakerService<S, D> {
        CircuitBreakerService {
            inner: self.inner,
            breaker: self.breaker,
            classify,
            refusing: self.refusing,
        }
    }

    /// The breaker guarding the service.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A refusing breaker is ready at once: the next call is rejected
        // without the inner service, so there is nothing to wait for. Asked
        // again on every poll, so that a service polled ready long before
        // its call does not keep a rejection the breaker no longer makes.
        // The inner service is still asked (not waited for): when it is
        // ready and the open timeout runs out before the call, the call
        // goes through as the breaker decides then.
        match self.breaker.peek_refusal() {
            Some(_) => {
                self.refusing = match self.inner.poll_ready(cx) {
                    Poll::Ready(Ok(())) => false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => true,
                };
                Poll::Ready(Ok(()))
            }
            None => {
                self.refusing = false;
                self.inner.poll_ready(cx).map_err(Into::into)
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if std::mem::take(&mut self.refusing) {
            // Decided by `poll_ready`: the inner service was not made ready
            // and must not be called. The wait is the breaker's current
            // advice (zero if it has let probes through since).
            self.breaker.count_refusal();
            let retry_after = self
                .breaker
                .peek_refusal()
                .unwrap_or(Some(std::time::Duration::ZERO));
            return ResponseFuture::rejected(CircuitOpen::new(retry_after));
        }
        // The breaker decides now: a call made after the open timeout ran
        // out is admitted, even if `poll_ready` found it refusing.
        guarded_call(&self.breaker, &mut self.inner, &self.classify, req)
    }
}

/// Asks `breaker` for a permit and calls `inner` only if it gives one.
#[inline]
fn guarded_call<S, C, Req>(
    breaker: &CircuitBreaker,
    inner: &mut S,
    classify: &C,
    req: Req,
) -> ResponseFuture<S::Future, C>
where
    S: Service<Req>,
    C: Clone,
{
    match breaker.try_acquire_owned() {
        Ok(permit) => ResponseFuture::called(inner.call(req), permit, classify.clone()),
        Err(refusal) => ResponseFuture::rejected(CircuitOpen::new(refusal.retry_after())),
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("classify", &std::any::type_name::<C>())
            .finish()
    }
}

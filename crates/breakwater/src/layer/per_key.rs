//! One breaker per key: requests to a failing endpoint are refused while
//! the others go on.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::classify::{AllErrors, Classify};
use super::{BoxError, CircuitOpen, ResponseFuture};
use crate::resilience::per_endpoint::PerEndpointCircuitBreaker;

/// A [`Service`] that guards each request with the breaker of its key, from
/// a [`PerEndpointCircuitBreaker`]; see the [module docs](super).
///
/// `K` extracts the key: any `Fn(&Req) -> Key` where `Key: AsRef<str>`
/// (a `String`, a `&'static str`, an `Arc<str>`). Keep keys few (a host, a
/// route template, never a full URL with ids): each distinct key gets a
/// breaker of its own.
#[derive(Clone)]
pub struct PerKeyCircuitBreakerService<S, K, C = AllErrors> {
    inner: S,
    breakers: Arc<PerEndpointCircuitBreaker>,
    key: K,
    classify: C,
}

impl<S, K> PerKeyCircuitBreakerService<S, K> {
    /// Guards `inner` with the breakers of `breakers`, chosen by `key`,
    /// counting every `Err` as a failure.
    pub fn new(inner: S, breakers: Arc<PerEndpointCircuitBreaker>, key: K) -> Self {
        Self {
            inner,
            breakers,
            key,
            classify: AllErrors,
        }
    }
}

impl<S, K, C> PerKeyCircuitBreakerService<S, K, C> {
    /// The same service with `classify` deciding how results count.
    pub fn classify<D>(self, classify: D) -> PerKeyCircuitBreakerService<S, K, D> {
        PerKeyCircuitBreakerService {
            inner: self.inner,
            breakers: self.breakers,
            key: self.key,
            classify,
        }
    }

    /// The breakers, one per key.
    pub fn breakers(&self) -> &Arc<PerEndpointCircuitBreaker> {
        &self.breakers
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

impl<S, K, C, Req, Key> Service<Req> for PerKeyCircuitBreakerService<S, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Fn(&Req) -> Key,
    Key: AsRef<str>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.breakers.get_or_create((self.key)(&req).as_ref());
        match breaker.try_acquire_owned() {
            // The future holds the registry's handle while the request runs.
            Ok(permit) => ResponseFuture::called_keeping(
                self.inner.call(req),
                permit,
                self.classify.clone(),
                breaker,
            ),
            Err(refusal) => ResponseFuture::rejected(CircuitOpen::new(refusal.retry_after())),
        }
    }
}

impl<S: fmt::Debug, K, C> fmt::Debug for PerKeyCircuitBreakerService<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKeyCircuitBreakerService")
            .field("inner", &self.inner)
            .field("key", &std::any::type_name::<K>())
            .field("classify", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

/// A [`Layer`] that wraps services in a [`PerKeyCircuitBreakerService`].
///
/// # Examples
///
/// One breaker per host:
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreakerConfig, CircuitState};
/// use breakwater::PerEndpointCircuitBreaker;
/// use breakwater::layer::{HttpStatus, PerKeyCircuitBreakerLayer};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breakers = Arc::new(PerEndpointCircuitBreaker::new(CircuitBreakerConfig {
///     sample_size: 1,
///     ..Default::default()
/// }));
/// let by_host = |req: &http::Request<()>| req.uri().host().unwrap_or_default().to_owned();
/// let client = tower::service_fn(|req: http::Request<()>| async move {
///     let status = if req.uri().host() == Some("down.example") { 503 } else { 200 };
///     Ok::<_, std::io::Error>(http::Response::builder().status(status).body(()).unwrap())
/// });
/// let svc = PerKeyCircuitBreakerLayer::new(breakers.clone(), by_host)
///     .classify(HttpStatus)
///     .layer(client);
///
/// let get = |url: &str| http::Request::get(url).body(()).unwrap();
/// svc.clone().oneshot(get("http://down.example/a")).await.unwrap();
/// svc.clone().oneshot(get("http://up.example/a")).await.unwrap();
/// assert_eq!(breakers.get_or_create("down.example").state(), CircuitState::Open);
/// assert_eq!(breakers.get_or_create("up.example").state(), CircuitState::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct PerKeyCircuitBreakerLayer<K, C = AllErrors> {
    breakers: Arc<PerEndpointCircuitBreaker>,
    key: K,
    classify: C,
}

impl<K> PerKeyCircuitBreakerLayer<K> {
    /// A layer that guards each request with the breaker `key` picks from
    /// `breakers`, counting every `Err` as a failure.
    pub fn new(breakers: Arc<PerEndpointCircuitBreaker>, key: K) -> Self {
        Self {
            breakers,
            key,
            classify: AllErrors,
        }
    }
}

impl<K, C> PerKeyCircuitBreakerLayer<K, C> {
    /// The same layer with `classify` deciding how results count.
    pub fn classify<D>(self, classify: D) -> PerKeyCircuitBreakerLayer<K, D> {
        PerKeyCircuitBreakerLayer {
            breakers: self.breakers,
            key: self.key,
            classify,
        }
    }

    /// The breakers, one per key.
    pub fn breakers(&self) -> &Arc<PerEndpointCircuitBreaker> {
        &self.breakers
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for PerKeyCircuitBreakerLayer<K, C> {
    type Service = PerKeyCircuitBreakerService<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PerKeyCircuitBreakerService::new(inner, self.breakers.clone(), self.key.clone())
            .classify(self.classify.clone())
    }
}

impl<K, C> fmt::Debug for PerKeyCircuitBreakerLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKeyCircuitBreakerLayer")
            .field("key", &std::any::type_name::<K>())
            .field("classify", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

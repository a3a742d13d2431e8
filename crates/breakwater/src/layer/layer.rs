use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::classify::AllErrors;
use super::CircuitBreakerService;
use crate::resilience::CircuitBreaker;

/// A [`Layer`] that wraps services in a [`CircuitBreakerService`], all of
/// them sharing one breaker.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig};
/// use breakwater::layer::{CircuitBreakerLayer, HttpStatus};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
/// let svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()).classify(HttpStatus))
///     .service_fn(|_req: ()| async {
///         Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
///     });
/// let res = svc.oneshot(()).await.unwrap();
/// assert_eq!(res.status(), 503); // returned as is...
/// assert_eq!(breaker.metrics().failures, 1); // ...and counted as a failure
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = AllErrors> {
    breaker: Arc<CircuitBreaker>,
    classify: C,
}

impl CircuitBreakerLayer {
    /// A layer that guards services with `breaker`, counting every `Err`
    /// as a failure.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            breaker,
            classify: AllErrors,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same layer with `classify` deciding how results count (see
    /// [`Classify`](super::Classify)).
    pub fn classify<D>(self, classify: D) -> CircuitBreakerLayer<D> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }

    /// The breaker the services share.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone()).classify(self.classify.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .field("classify", &std::any::type_name::<C>())
            .finish()
    }
}

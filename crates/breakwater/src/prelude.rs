//! The names most programs use: `use breakwater::prelude::*;`.
//!
//! ```
//! use breakwater::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let breaker = CircuitBreaker::new(CircuitBreakerConfig::default());
//! let reply = breaker.call(|| async { Ok::<_, std::io::Error>("pong") }).await;
//! assert_eq!(reply.ok(), Some("pong"));
//! assert_eq!(breaker.state(), CircuitState::Closed);
//! # }
//! ```

pub use crate::{
    CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState, PerEndpointCircuitBreaker,
    RegistryLimits, Verdict,
};
#[cfg(feature = "resilience")]
pub use crate::{
    DegradationLevel, Fallback, GracefulDegradation, Outcome, ResilienceStrategy,
    ResilientExecutor, Retry,
};

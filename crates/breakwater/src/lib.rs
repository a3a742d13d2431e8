//! # breakwater
//!
//! A circuit breaker for Rust services that call things which fail: fast
//! (a Closed call costs a few nanoseconds, takes no lock and allocates
//! nothing), correct under concurrency, cancellation and panics, and
//! observable (transition events, counters for metrics).
//!
//! ```
//! use std::sync::Arc;
//! use breakwater::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
//!     failure_threshold: 0.5, // open at 50% failures...
//!     sample_size: 20,        // ...of the last 20 calls
//!     open_timeout_ms: 5_000, // stay open 5 s, then probe
//!     ..Default::default()
//! }));
//!
//! match breaker.call(|| async { Ok::<_, std::io::Error>("pong") }).await {
//!     Ok(reply) => assert_eq!(reply, "pong"),
//!     Err(CircuitError::Open { retry_after }) => println!("skip; retry in {retry_after:?}"),
//!     Err(e) => println!("failed: {e}"),
//! }
//! assert_eq!(breaker.state(), CircuitState::Closed);
//! # }
//! ```
//!
//! ## Where things are
//!
//! Every type of the breaker, the registry, the strategies and
//! degradation is at the crate root (`breakwater::CircuitBreaker`,
//! `breakwater::RegistryLimits`, `breakwater::Retry`...), and the common
//! ones are in the [`prelude`]; the breaker's core types are also in
//! [`resilience`], whose documentation gives the exact semantics (state
//! machine, guarantees, memory ordering). The optional parts are modules:
//! `layer` (tower), `prometheus`, `traits` (the observer host types)
//! and `webhook` (real executors).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `resilience` | yes | the strategies around a breaker (`ResilientExecutor`, `Retry`, `Fallback`) and `GracefulDegradation`; the breaker and the per-endpoint registry are always built |
//! | `actions` | yes | `breakwater::traits`: events, actions, the `ActionExecutor` trait and the breaker around it (uuid, chrono, serde_json, async-trait, url, http, minijinja) |
//! | `webhook` | no | `breakwater::webhook`: real executors (webhooks signed the Standard Webhooks way, Slack, email over SMTP, log), reqwest and lettre with rustls; implies `actions` |
//! | `reqwest` | no | `HttpStatus` also classifies `reqwest::Response`, for a `reqwest::Client` behind the layer; implies `tower` |
//! | `tower` | no | `breakwater::layer`: a tower `Layer` around any `Service`, one breaker or one per key |
//! | `prometheus` | no | `breakwater::prometheus`: a scrape-time `prometheus-client` collector |
//!
//! With `default-features = false` the crate is the breaker and the
//! per-endpoint registry alone: none of the `actions` dependencies are
//! built.
//!
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
mod error;
#[cfg(feature = "tower")]
pub mod layer;
pub mod prelude;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod resilience;
mod sync;
#[cfg(feature = "actions")]
pub mod traits;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use crate::config::{
    CircuitBreakerConfig, ConfigError, ConfigProblem, MAX_DURATION_MS, MAX_HALF_OPEN_REQUESTS,
    MAX_SAMPLE_SIZE,
};
pub use crate::error::CircuitError;
#[cfg(feature = "resilience")]
pub use crate::resilience::degradation::{
    DegradationLevel, EndpointHealth, EndpointHealthSource, GracefulDegradation,
    DEFAULT_CRITICAL_FRACTION, DEFAULT_HIGH_WATERMARK, DEFAULT_LOW_WATERMARK,
};
pub use crate::resilience::events::{OpenDurations, Transition, TransitionListener};
pub use crate::resilience::metrics::CircuitMetrics;
pub use crate::resilience::per_endpoint::{
    EndpointStatistics, PerEndpointCircuitBreaker, RegistryLimits,
};
pub use crate::resilience::permit::{OwnedPermit, Permit, Verdict};
pub use crate::resilience::snapshot::CircuitSnapshot;
pub use crate::resilience::state::CircuitState;
#[cfg(feature = "resilience")]
pub use crate::resilience::strategies::{
    BreakerSource, ExecutorMetrics, Fallback, FallbackFn, FallbackValue, FallbackWhen, Outcome,
    ResilienceStrategy, ResilientExecutor, Retry, DEFAULT_MAX_BACKOFF,
};
pub use crate::resilience::CircuitBreaker;

/// The README's examples, compiled and run as doctests (they need the
/// features they state; `cargo test --all-features` has them all).
#[cfg(all(
    doctest,
    feature = "tower",
    feature = "resilience",
    feature = "actions",
    feature = "webhook"
))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

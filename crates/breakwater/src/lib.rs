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
//! ones are in the [`prelude`]. The optional parts are modules:
//! [`layer`] (tower), [`prometheus`], `traits` (the observer host types)
//! and `webhook` (real executors).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `resilience` | yes | the breaker and its strategies (always built; kept as a name) |
//! | `actions` | yes | `breakwater::traits`: events, actions, the `ActionExecutor` trait and the breaker around it (uuid, chrono, serde_json, async-trait, url, http, minijinja) |
//! | `webhook` | no | `breakwater::webhook`: real executors (webhooks signed the Standard Webhooks way, Slack, email over SMTP, log), reqwest and lettre with rustls; implies `actions` |
//! | `tower` | no | `breakwater::layer`: a tower `Layer` around any `Service`, one breaker or one per key |
//! | `prometheus` | no | `breakwater::prometheus`: a scrape-time `prometheus-client` collector |
//!
//! With `default-features = false` the crate is the breaker alone: none of
//! the `actions` dependencies are built.
//!
//! # Semantics
//! ```text
//!   Closed ──(failure rate >= threshold over >= minimum_calls)──▶ Open
//!     ▲                                                            │ open timeout
//!     │                                                            ▼ (backoff, jitter)
//!     └──(half_open_max_requests probes succeeded)────────── HalfOpen
//!                                                  a probe failed ──▶ Open (longer)
//! ```
//!
//! ## Guarantees
//!
//! * **Closed is free.** A Closed call reads one atomic word to be admitted
//!   and, with the default count window, records its outcome with one atomic
//!   add and one load of its window slot: no lock, no allocation, no clock.
//! * **Open is exact.** A rejection reads the state, the deadline and the
//!   clock, and allocates nothing. No call after the deadline is ever
//!   refused, however late a timer task runs or however busy the runtime
//!   is, and `retry_after` is the exact time left. A small timer task (one
//!   per opening) moves the breaker to HalfOpen at the deadline so that the
//!   transition is published even when no call comes, and
//!   [`CircuitBreaker::state`] reports HalfOpen from that moment even if
//!   the timer has not run yet.
//! * **Generations.** Every change of state bumps a generation number that
//!   each permit remembers. An outcome from an older generation (a slow call
//!   admitted while Closed that finishes after the breaker opened, a probe
//!   that outlived its HalfOpen period) describes a state that is gone and is
//!   ignored, so a late success cannot close a breaker and a late failure
//!   cannot land in a fresh window.
//! * **Cancellation.** Dropping the future of [`CircuitBreaker::call`] (or a
//!   [`Permit`]) records nothing and frees its probe slot.
//! * **Panics.** A call that panics counts as a failure and the panic goes on
//!   to the caller. The breaker holds no lock that a panic could poison.
//! * **Time.** All time is read through `tokio::time`, so tests can pause and
//!   advance it.
//!
//! ## Why a count window by default
//!
//! "The last 100 calls" needs no clock, so the Closed path stays free, and it
//! judges a quiet endpoint and a busy one by the same number of calls. A time
//! window (`window_ms`) judges "the last minute" instead: better when traffic
//! is bursty and old failures should age out, at the price of a clock read
//! per outcome.
//!
//! ## Memory ordering
//!
//! The breaker's state is one atomic word (state, generation, probes in
//! flight). Every transition is a compare-and-swap of that word with
//! `AcqRel` ordering, and every reader loads it with `Acquire`; what a
//! transition prepares before its swap (a cleared window, an opening's
//! deadline, which is itself stored with `Release` and loaded with
//! `Acquire`) is therefore visible to every thread that sees the new word.
//! A caller who observes `state() == Open` also observes the deadline that
//! `retry_after` reports.
//!
//! Everything else is a statistic or a setting read on its own: the window
//! slots, the counters of [`CircuitMetrics`] and of [`ExecutorMetrics`], and
//! the tuning that [`CircuitBreaker::update_config`] stores, use `Relaxed`.
//! A metrics snapshot is thus a set of individually exact counters, not one
//! instant: two counters read together may differ by the calls that finished
//! between the two loads. An outcome is attributed by the generation its
//! permit remembers, never by a later read of the state, so a relaxed
//! counter can never move the breaker.
//!
//! The models under `cfg(breakwater_loom)` check these claims with loom
//! (`scripts/loom.sh`): a transition racing an outcome, a reset, or another
//! transition.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
mod error;
#[cfg(feature = "tower")]
pub mod layer;
pub mod prelude;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod resilience;
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
pub use crate::resilience::degradation::{
    DegradationLevel, EndpointHealth, EndpointHealthSource, GracefulDegradation,
    DEFAULT_CRITICAL_FRACTION, DEFAULT_HIGH_WATERMARK, DEFAULT_LOW_WATERMARK,
};
pub use crate::resilience::per_endpoint::{
    EndpointStatistics, PerEndpointCircuitBreaker, RegistryLimits,
};
pub use crate::resilience::strategies::{
    BreakerSource, ExecutorMetrics, Fallback, FallbackFn, FallbackValue, FallbackWhen, Outcome,
    ResilienceStrategy, ResilientExecutor, Retry, DEFAULT_MAX_BACKOFF,
};
pub use crate::resilience::{
    CircuitBreaker, CircuitMetrics, CircuitSnapshot, CircuitState, OpenDurations, OwnedPermit,
    Permit, Transition, TransitionListener, Verdict,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

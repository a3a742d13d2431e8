//! Prometheus metrics for breakers, read at scrape time.
//!
//! [`BreakerCollector`] is a `prometheus-client`
//! [`Collector`]: register it once and every scrape reads
//! the breakers' own counters. Nothing is updated on the call path, so a
//! call costs the same whether or not a collector is registered, and a
//! scrape takes no lock a call needs (it reads atomics, and clones the
//! registry's `Arc`s under the same shared shard locks lookups take).
//!
//! # Series
//!
//! With the default prefix `breakwater` (see [`BreakerCollectorBuilder::prefix`]);
//! every `circuit_*` series carries an `endpoint` label.
//!
//! | series | type | extra labels | meaning |
//! | --- | --- | --- | --- |
//! | `breakwater_circuit_state` | gauge | | 0 closed, 1 open, 2 half-open |
//! | `breakwater_circuit_state_changes_total` | counter | `from`, `to` | transitions |
//! | `breakwater_circuit_open_duration_seconds` | histogram | | how long each opening lasted |
//! | `breakwater_circuit_requests_total` | counter | | calls that asked to run |
//! | `breakwater_circuit_requests_allowed_total` | counter | | admitted |
//! | `breakwater_circuit_requests_blocked_total` | counter | | refused (Open, or HalfOpen full) |
//! | `breakwater_circuit_half_open_tests_total` | counter | | probes admitted |
//! | `breakwater_circuit_failures_total` | counter | | outcomes judged failures |
//! | `breakwater_circuit_slow_calls_total` | counter | | outcomes judged slow |
//! | `breakwater_circuit_success_rate_percent` | gauge | | over the current window |
//! | `breakwater_circuit_failure_rate_percent` | gauge | | over the current window |
//! | `breakwater_circuit_failure_threshold_percent` | gauge | | the configured threshold |
//! | `breakwater_circuit_last_state_change_timestamp_seconds` | gauge | | Unix time |
//! | `breakwater_registry_endpoints` | gauge | | breakers retained |
//! | `breakwater_registry_overflows_total` | counter | | calls served outside the cap |
//!
//! `state_changes_total` always has the four automatic transitions
//! (closed→open, open→half_open, half_open→closed, half_open→open), so that
//! `increase()` sees their first one; the others (resets, forcing) appear
//! once they happened. `last_state_change_timestamp_seconds` appears after a
//! breaker's first transition. The `registry_*` series appear when a
//! registry is attached and carry no `endpoint` label.
//!
//! # Cardinality
//!
//! At most [`max_endpoints`](BreakerCollectorBuilder::max_endpoints)
//! endpoints are exported on their own: Open and HalfOpen ones first, then
//! the busiest (most requests). The rest are summed under
//! `endpoint="_other"`: their counters and open durations added up, the
//! failure and success rates taken over their windows together, the last
//! change the latest of theirs; `_other` has no `state` or
//! `failure_threshold_percent` (a sum of states means nothing). A breaker
//! whose name is already taken (two breakers registered under one name, or
//! a name also used as a registry key, or `_other` itself) is counted under
//! `_other` too. An endpoint that moves in or out of `_other`, or is evicted
//! from the registry and comes back, restarts its counters, which
//! Prometheus' `rate()` and `increase()` treat as a counter reset.
//!
//! # Examples
//!
//! The exact exposition of one breaker:
//!
//! ```
//! use std::sync::Arc;
//! use breakwater::{CircuitBreaker, CircuitBreakerConfig};
//! use breakwater::prometheus::BreakerCollector;
//! use prometheus_client::{encoding::text::encode, registry::Registry};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let breaker = Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default()));
//! for ok in [true, true, true, false] {
//!     let _ = breaker.call(|| async move { if ok { Ok(()) } else { Err("503") } }).await;
//! }
//!
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(BreakerCollector::for_breaker("payments", breaker)));
//! let mut text = String::new();
//! encode(&mut text, &registry).unwrap();
//!
//! let buckets: String = [
//!     "0.1", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "900.0",
//!     "3600.0", "+Inf",
//! ]
//! .iter()
//! .map(|le| {
//!     format!("breakwater_circuit_open_duration_seconds_bucket{{le=\"{le}\",endpoint=\"payments\"}} 0\n")
//! })
//! .collect();
//! let expected = format!(
//!     "\
//! ## HELP breakwater_circuit_state State of the circuit: 0 closed, 1 open, 2 half-open.
//! ## TYPE breakwater_circuit_state gauge
//! breakwater_circuit_state{{endpoint=\"payments\"}} 0
//! ## HELP breakwater_circuit_state_changes Transitions between states.
//! ## TYPE breakwater_circuit_state_changes counter
//! breakwater_circuit_state_changes_total{{endpoint=\"payments\",from=\"closed\",to=\"open\"}} 0
//! breakwater_circuit_state_changes_total{{endpoint=\"payments\",from=\"open\",to=\"half_open\"}} 0
//! breakwater_circuit_state_changes_total{{endpoint=\"payments\",from=\"half_open\",to=\"closed\"}} 0
//! breakwater_circuit_state_changes_total{{endpoint=\"payments\",from=\"half_open\",to=\"open\"}} 0
//! ## HELP breakwater_circuit_open_duration_seconds How long each opening of the circuit lasted.
//! ## TYPE breakwater_circuit_open_duration_seconds histogram
//! breakwater_circuit_open_duration_seconds_sum{{endpoint=\"payments\"}} 0.0
//! breakwater_circuit_open_duration_seconds_count{{endpoint=\"payments\"}} 0
//! {buckets}\
//! ## HELP breakwater_circuit_requests Calls that asked to run.
//! ## TYPE breakwater_circuit_requests counter
//! breakwater_circuit_requests_total{{endpoint=\"payments\"}} 4
//! ## HELP breakwater_circuit_requests_allowed Calls admitted.
//! ## TYPE breakwater_circuit_requests_allowed counter
//! breakwater_circuit_requests_allowed_total{{endpoint=\"payments\"}} 4
//! ## HELP breakwater_circuit_requests_blocked Calls refused without running (open, or half-open with every probe slot busy).
//! ## TYPE breakwater_circuit_requests_blocked counter
//! breakwater_circuit_requests_blocked_total{{endpoint=\"payments\"}} 0
//! ## HELP breakwater_circuit_half_open_tests Probe calls admitted while half-open.
//! ## TYPE breakwater_circuit_half_open_tests counter
//! breakwater_circuit_half_open_tests_total{{endpoint=\"payments\"}} 0
//! ## HELP breakwater_circuit_failures Outcomes judged failures.
//! ## TYPE breakwater_circuit_failures counter
//! breakwater_circuit_failures_total{{endpoint=\"payments\"}} 1
//! ## HELP breakwater_circuit_slow_calls Outcomes judged slow.
//! ## TYPE breakwater_circuit_slow_calls counter
//! breakwater_circuit_slow_calls_total{{endpoint=\"payments\"}} 0
//! ## HELP breakwater_circuit_success_rate_percent Successes in the current window, in percent.
//! ## TYPE breakwater_circuit_success_rate_percent gauge
//! breakwater_circuit_success_rate_percent{{endpoint=\"payments\"}} 75.0
//! ## HELP breakwater_circuit_failure_rate_percent Failures in the current window, in percent.
//! ## TYPE breakwater_circuit_failure_rate_percent gauge
//! breakwater_circuit_failure_rate_percent{{endpoint=\"payments\"}} 25.0
//! ## HELP breakwater_circuit_failure_threshold_percent Failure rate at which the circuit opens, in percent.
//! ## TYPE breakwater_circuit_failure_threshold_percent gauge
//! breakwater_circuit_failure_threshold_percent{{endpoint=\"payments\"}} 50.0
//! ## HELP breakwater_circuit_last_state_change_timestamp_seconds Unix time of the last transition.
//! ## TYPE breakwater_circuit_last_state_change_timestamp_seconds gauge
//! ## EOF
//! "
//! );
//! assert_eq!(text, expected);
//! # }
//! ```
//!
//! A registry's breakers, with a custom prefix and at most one endpoint of
//! its own:
//!
//! ```
//! use std::sync::Arc;
//! use breakwater::{CircuitBreakerConfig, PerEndpointCircuitBreaker};
//! use breakwater::prometheus::BreakerCollector;
//! use prometheus_client::{encoding::text::encode, registry::Registry};
//!
//! let breakers = Arc::new(PerEndpointCircuitBreaker::new(CircuitBreakerConfig::default()));
//! breakers.get_or_create("http://a:80").force_open();
//! breakers.get_or_create("http://b:80");
//! breakers.get_or_create("http://c:80");
//!
//! let collector = BreakerCollector::builder()
//!     .prefix("myapp")
//!     .max_endpoints(1)
//!     .registry(breakers)
//!     .build()
//!     .unwrap();
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(collector));
//! let mut text = String::new();
//! encode(&mut text, &registry).unwrap();
//!
//! assert!(text.contains("myapp_circuit_state{endpoint=\"http://a:80\"} 1\n"));
//! assert!(text.contains("myapp_circuit_requests_total{endpoint=\"_other\"} 0\n"));
//! assert!(text.contains("myapp_registry_endpoints 3\n"));
//! assert!(!text.contains("http://b:80"));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;

mod row;

use self::row::Row;
use crate::resilience::per_endpoint::PerEndpointCircuitBreaker;
use crate::resilience::{CircuitBreaker, CircuitState, OPEN_DURATION_BOUNDS};

/// The `endpoint` label of the series that sum the endpoints not exported
/// on their own.
pub const OTHER_ENDPOINT: &str = "_other";

/// Endpoints exported on their own by default.
pub const DEFAULT_MAX_ENDPOINTS: usize = 1_000;

/// The default prefix of every series name.
pub const DEFAULT_PREFIX: &str = "breakwater";

const BUCKETS: usize = OPEN_DURATION_BOUNDS.len() + 1;

/// Transitions exported even before they happen.
const AUTOMATIC: [(CircuitState, CircuitState); 4] = [
    (CircuitState::Closed, CircuitState::Open),
    (CircuitState::Open, CircuitState::HalfOpen),
    (CircuitState::HalfOpen, CircuitState::Closed),
    (CircuitState::HalfOpen, CircuitState::Open),
];

/// A problem with a [`BreakerCollectorBuilder`]'s settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectorError {
    /// The prefix cannot start a metric name.
    #[error(
        "prefix: {0:?} is not a valid metric name prefix \
         (ASCII letters, digits and '_', not starting with a digit)"
    )]
    InvalidPrefix(String),
}

/// A scrape-time `prometheus-client` [`Collector`] over breakers: one,
/// several registered under names, and the breakers of a
/// [`PerEndpointCircuitBreaker`]. See the [module documentation](self) for
/// the series.
pub struct BreakerCollector {
    names: Names,
    max_endpoints: usize,
    breakers: Vec<(Arc<str>, Arc<CircuitBreaker>)>,
    registry: Option<Arc<PerEndpointCircuitBreaker>>,
}

impl fmt::Debug for BreakerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerCollector")
            .field("prefix", &self.names.prefix)
            .field("max_endpoints", &self.max_endpoints)
            .field(
                "breakers",
                &self.breakers.iter().map(|b| &*b.0).collect::<Vec<_>>(),
            )
            .field("registry", &self.registry.is_some())
            .finish()
    }
}

/// Builds a [`BreakerCollector`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use breakwater::{CircuitBreaker, CircuitBreakerConfig, PerEndpointCircuitBreaker};
/// use breakwater::prometheus::BreakerCollector;
///
/// let collector = BreakerCollector::builder()
///     .prefix("shop")
///     .max_endpoints(200)
///     .breaker("database", Arc::new(CircuitBreaker::new(CircuitBreakerConfig::default())))
///     .registry(Arc::new(PerEndpointCircuitBreaker::default()))
///     .build()
///     .unwrap();
/// # let _ = collector;
/// assert!(BreakerCollector::builder().prefix("9lives").build().is_err());
/// ```
#[derive(Debug)]
pub struct BreakerCollectorBuilder {
    prefix: String,
    max_endpoints: usize,
    breakers: Vec<(Arc<str>, Arc<CircuitBreaker>)>,
    registry: Option<Arc<PerEndpointCircuitBreaker>>,
}

impl Default for BreakerCollectorBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
            breakers: Vec::new(),
            registry: None,
        }
    }
}

impl BreakerCollectorBuilder {
    /// The prefix of every series name (default `breakwater`); an empty
    /// prefix leaves the names bare (`circuit_state`). A `Registry`'s own
    /// prefix, if any, comes in front of it.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many endpoints are exported on their own (default 1 000); the
    /// rest are summed under `endpoint="_other"`. 0 sums them all.
    pub fn max_endpoints(mut self, max: usize) -> Self {
        self.max_endpoints = max;
        self
    }

    /// Exports `breaker` under `endpoint="<name>"`.
    pub fn breaker(mut self, name: impl Into<Arc<str>>, breaker: Arc<CircuitBreaker>) -> Self {
        self.breakers.push((name.into(), breaker));
        self
    }

    /// Exports every breaker of `registry` under its endpoint, and the
    /// registry's own series. A second call replaces the first registry
    /// (register one collector per registry, with different prefixes or in
    /// sub-registries with a label, to export several).
    pub fn registry(mut self, registry: Arc<PerEndpointCircuitBreaker>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The collector.
    ///
    /// # Errors
    ///
    /// [`CollectorError::InvalidPrefix`] when the prefix is not made of
    /// ASCII letters, digits and `_`, or starts with a digit.
    pub fn build(self) -> Result<BreakerCollector, CollectorError> {
        let valid = self
            .prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !self.prefix.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(CollectorError::InvalidPrefix(self.prefix));
        }
        Ok(BreakerCollector {
            names: Names::new(&self.prefix),
            max_endpoints: self.max_endpoints,
            breakers: self.breakers,
            registry: self.registry,
        })
    }
}

impl BreakerCollector {
    /// A builder, with the default prefix and cap and no breaker.
    pub fn builder() -> BreakerCollectorBuilder {
        BreakerCollectorBuilder::default()
    }

    /// A collector over one breaker, exported under `endpoint="<name>"`.
    pub fn for_breaker(name: impl Into<Arc<str>>, breaker: Arc<CircuitBreaker>) -> Self {
        Self::builder()
            .breaker(name, breaker)
            .build()
            .expect("the default prefix is valid")
    }

    /// A collector over every breaker of `registry`, each exported under
    /// its endpoint, with the default prefix and cap.
    pub fn for_registry(registry: Arc<PerEndpointCircuitBreaker>) -> Self {
        Self::builder()
            .registry(registry)
            .build()
            .expect("the default prefix is valid")
    }
}

/// The series names, with the prefix, made once.
#[derive(Debug)]
struct Names {
    prefix: String,
    state: String,
    state_changes: String,
    open_duration: String,
    requests: String,
    allowed: String,
    blocked: String,
    half_open_tests: String,
    failures: String,
    slow_calls: String,
    success_rate: String,
    failure_rate: String,
    threshold: String,
    last_change: String,
    registry_endpoints: String,
    registry_overflows: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        let name = |n: &str| {
            if prefix.is_empty() {
                n.to_string()
            } else {
                format!("{prefix}_{n}")
            }
        };
        // Counters are named without `_total`: the encoder adds it.
        Self {
            prefix: prefix.to_string(),
            state: name("circuit_state"),
            state_changes: name("circuit_state_changes"),
            open_duration: name("circuit_open_duration_seconds"),
            requests: name("circuit_requests"),
            allowed: name("circuit_requests_allowed"),
            blocked: name("circuit_requests_blocked"),
            half_open_tests: name("circuit_half_open_tests"),
            failures: name("circuit_failures"),
            slow_calls: name("circuit_slow_calls"),
            success_rate: name("circuit_success_rate_percent"),
            failure_rate: name("circuit_failure_rate_percent"),
            threshold: name("circuit_failure_threshold_percent"),
            last_change: name("circuit_last_state_change_timestamp_seconds"),
            registry_endpoints: name("registry_endpoints"),
            registry_overflows: name("registry_overflows"),
        }
    }
}

/// A family of one value per row: name, help, and the row's value.
type Family<'a, T> = (&'a str, &'a str, fn(&Row) -> T);

type NoExemplars<'a> = Option<&'a HashMap<usize, Exemplar<NoLabelSet, f64>>>;

fn counter(e: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    e.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for BreakerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let (rows, other) = self.rows();
        let all = || rows.iter().chain(other.as_ref());
        let n = &self.names;

        let mut e = encoder.encode_descriptor(
            &n.state,
            "State of the circuit: 0 closed, 1 open, 2 half-open.",
            None,
            MetricType::Gauge,
        )?;
        for r in &rows {
            if let Some(state) = r.state {
                e.encode_family(&[("endpoint", &*r.name)])?
                    .encode_gauge(&i64::from(state.as_gauge()))?;
            }
        }

        let mut e = encoder.encode_descriptor(
            &n.state_changes,
            "Transitions between states.",
            None,
            MetricType::Counter,
        )?;
        const STATES: [CircuitState; 3] = [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ];
        for r in all() {
            let count = |from: CircuitState, to: CircuitState| {
                r.transitions[from.as_gauge() as usize][to.as_gauge() as usize]
            };
            for (from, to) in AUTOMATIC {
                let labels = [
                    ("endpoint", &*r.name),
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                ];
                counter(&mut e, &labels, count(from, to))?;
            }
            for from in STATES {
                for to in STATES {
                    let v = count(from, to);
                    if from != to && v != 0 && !AUTOMATIC.contains(&(from, to)) {
                        let labels = [
                            ("endpoint", &*r.name),
                            ("from", from.as_str()),
                            ("to", to.as_str()),
                        ];
                        counter(&mut e, &labels, v)?;
                    }
                }
            }
        }

        let mut e = encoder.encode_descriptor(
            &n.open_duration,
            "How long each opening of the circuit lasted.",
            None,
            MetricType::Histogram,
        )?;
        let mut buckets: Vec<(f64, u64)> = OPEN_DURATION_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|b| (b, 0))
            .collect();
        for r in all() {
            for (b, n) in buckets.iter_mut().zip(r.open_buckets) {
                b.1 = n;
            }
            e.encode_family(&[("endpoint", &*r.name)])?
                .encode_histogram(
                    r.open_sum_us as f64 / 1e6,
                    r.open_count,
                    &buckets,
                    None as NoExemplars<'_>,
                )?;
        }

        let counters: [Family<'_, u64>; 6] = [
            (&n.requests, "Calls that asked to run.", |r| r.requests),
            (&n.allowed, "Calls admitted.", |r| r.allowed),
            (
                &n.blocked,
                "Calls refused without running (open, or half-open with every probe slot busy).",
                |r| r.blocked,
            ),
            (
                &n.half_open_tests,
                "Probe calls admitted while half-open.",
                |r| r.half_open_tests,
            ),
            (&n.failures, "Outcomes judged failures.", |r| r.failures),
            (&n.slow_calls, "Outcomes judged slow.", |r| r.slow_calls),
        ];
        for (name, help, value) in counters {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in all() {
                counter(&mut e, &[("endpoint", &*r.name)], value(r))?;
            }
        }

        let gauges: [Family<'_, Option<f64>>; 4] = [
            (
                &n.success_rate,
                "Successes in the current window, in percent.",
                |r| Some(100.0 - r.failure_percent()),
            ),
            (
                &n.failure_rate,
                "Failures in the current window, in percent.",
                |r| Some(r.failure_percent()),
            ),
            (
                &n.threshold,
                "Failure rate at which the circuit opens, in percent.",
                |r| r.threshold.map(|t| t * 100.0),
            ),
            (&n.last_change, "Unix time of the last transition.", |r| {
                r.last_change
            }),
        ];
        for (name, help, value) in gauges {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for r in all() {
                if let Some(v) = value(r) {
                    e.encode_family(&[("endpoint", &*r.name)])?
                        .encode_gauge(&v)?;
                }
            }
        }

        if let Some(registry) = &self.registry {
            encoder
                .encode_descriptor(
                    &n.registry_endpoints,
                    "Breakers the per-endpoint registry retains.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(registry.len() as u64))?;
            encoder
                .encode_descriptor(
                    &n.registry_overflows,
                    "Breakers handed out without being retained because the registry was full.",
                    None,
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&registry.overflows(), None)?;
        }
        Ok(())
    }
}

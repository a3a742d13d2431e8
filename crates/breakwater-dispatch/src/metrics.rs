//! The service's own Prometheus series (`breakwater_dispatch_*`).
//!
//! Counters are labelled by `endpoint` (the breaker key, so cardinality is
//! bounded by the configuration); attempts also by `outcome`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `endpoint` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The breaker key.
    pub endpoint: String,
}

/// The `endpoint` and `outcome` labels of attempts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabel {
    /// The breaker key.
    pub endpoint: String,
    /// `success`, `transient`, `permanent`, `gone` or `timeout`.
    pub outcome: &'static str,
}

/// The `reason` label of intake refusals.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `bad_request`, `unauthorized`, `payload_too_large`, `unavailable`
    /// (the store failed or the service is stopping) or `internal`.
    pub reason: &'static str,
}

/// Every series the service publishes itself.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Events accepted (new ids only).
    pub events_accepted: Counter,
    /// Events whose id was already stored.
    pub events_duplicate: Counter,
    /// Delivered events removed from the store after `keep_delivered_hours`.
    pub events_pruned: Counter,
    /// Actions delivered.
    pub delivered: Family<EndpointLabel, Counter>,
    /// Actions parked by an open circuit.
    pub deferred: Family<EndpointLabel, Counter>,
    /// Actions scheduled for another attempt.
    pub retried: Family<EndpointLabel, Counter>,
    /// Actions moved to the dead-letter table.
    pub dead_lettered: Family<EndpointLabel, Counter>,
    /// Actions dead-lettered at intake because their endpoint's backlog was
    /// over `max_backlog_per_endpoint` (also counted in `dead_lettered`).
    pub over_quota: Family<EndpointLabel, Counter>,
    /// Each endpoint's waiting actions in the store (pending or parked, in
    /// memory or not).
    pub backlog: Family<EndpointLabel, Gauge>,
    /// Age of each endpoint's oldest waiting action.
    pub backlog_oldest_age_seconds: Family<EndpointLabel, Gauge>,
    /// `POST /events` requests refused, by reason.
    pub intake_refused: Family<ReasonLabel, Counter>,
    /// 1 while the store can keep what it is given, 0 when it cannot (its
    /// file deleted or replaced, say): intake answers 503 then.
    pub store_up: Gauge,
    /// Actions this instance let go without delivering because its lease
    /// had been taken over (Postgres fleet): another instance has them.
    pub claims_lost: Counter,
    /// Outcomes this instance wrote too late to count (its lease had been
    /// taken over; Postgres fleet): ignored by the store.
    pub stale_outcomes: Counter,
    /// Attempts by outcome.
    pub attempts: Family<AttemptLabel, Counter>,
    /// Endpoints disabled by `410 Gone` (1 while disabled).
    pub endpoint_disabled: Family<EndpointLabel, Gauge>,
    /// Actions held in memory: queued, parked or running.
    pub queue_depth: Gauge,
    /// Age of the oldest action neither delivered nor dead-lettered.
    pub oldest_pending_age_seconds: Gauge,
    /// From acceptance to delivery.
    pub delivery_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            events_pruned: Counter::default(),
            delivered: Family::default(),
            deferred: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            over_quota: Family::default(),
            backlog: Family::default(),
            backlog_oldest_age_seconds: Family::default(),
            intake_refused: Family::default(),
            store_up: Gauge::default(),
            claims_lost: Counter::default(),
            stale_outcomes: Counter::default(),
            attempts: Family::default(),
            endpoint_disabled: Family::default(),
            queue_depth: Gauge::default(),
            oldest_pending_age_seconds: Gauge::default(),
            delivery_latency: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
        }
    }
}

impl Metrics {
    /// Registers every series in `registry` (names get the
    /// `breakwater_dispatch_` prefix; counters get `_total`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("breakwater_dispatch");
        r.register(
            "events_accepted",
            "Events accepted (new ids)",
            self.events_accepted.clone(),
        );
        r.register(
            "events_duplicate",
            "Events whose id was already stored (accepted again, not delivered again)",
            self.events_duplicate.clone(),
        );
        r.register(
            "events_pruned",
            "Delivered events removed from the store once older than keep_delivered_hours",
            self.events_pruned.clone(),
        );
        r.register(
            "actions_delivered",
            "Actions delivered",
            self.delivered.clone(),
        );
        r.register(
            "actions_deferred",
            "Actions parked by an open circuit (no attempt used)",
            self.deferred.clone(),
        );
        r.register(
            "actions_retried",
            "Actions scheduled for another attempt after a transient failure",
            self.retried.clone(),
        );
        r.register(
            "actions_dead_lettered",
            "Actions moved to the dead-letter table",
            self.dead_lettered.clone(),
        );
        r.register(
            "actions_over_quota",
            "Actions dead-lettered at intake: their endpoint's backlog was over max_backlog_per_endpoint",
            self.over_quota.clone(),
        );
        r.register(
            "backlog_actions",
            "Waiting actions in the store (pending or parked, in memory or not), by endpoint",
            self.backlog.clone(),
        );
        r.register(
            "backlog_oldest_age_seconds",
            "Age of each endpoint's oldest waiting action",
            self.backlog_oldest_age_seconds.clone(),
        );
        r.register(
            "intake_refused",
            "POST /events requests refused, by reason",
            self.intake_refused.clone(),
        );
        r.register(
            "store_up",
            "1 while the store can keep what it is given; 0 when it cannot (intake answers 503)",
            self.store_up.clone(),
        );
        r.register(
            "claims_lost",
            "Actions let go undelivered because this instance's lease was taken over",
            self.claims_lost.clone(),
        );
        r.register(
            "stale_outcomes",
            "Outcomes written too late to count (this instance's lease was taken over)",
            self.stale_outcomes.clone(),
        );
        r.register(
            "attempts",
            "Delivery attempts by outcome",
            self.attempts.clone(),
        );
        r.register(
            "endpoint_disabled",
            "1 while an endpoint is disabled by 410 Gone",
            self.endpoint_disabled.clone(),
        );
        r.register(
            "queue_depth",
            "Actions held in memory: queued, parked or running",
            self.queue_depth.clone(),
        );
        r.register(
            "oldest_pending_age_seconds",
            "Age of the oldest action neither delivered nor dead-lettered",
            self.oldest_pending_age_seconds.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "From acceptance to delivery",
            self.delivery_latency.clone(),
        );
    }

    pub(crate) fn endpoint(endpoint: &str) -> EndpointLabel {
        EndpointLabel {
            endpoint: endpoint.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alerted_names_are_exposed() {
        let m = Metrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.dead_lettered
            .get_or_create(&Metrics::endpoint("http://a:1"))
            .inc();
        m.queue_depth.set(3);
        let hook = Metrics::endpoint("http://a:1");
        m.backlog.get_or_create(&hook).set(7);
        m.backlog_oldest_age_seconds.get_or_create(&hook).set(5);
        m.over_quota.get_or_create(&hook).inc();
        m.intake_refused
            .get_or_create(&ReasonLabel {
                reason: "unavailable",
            })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for name in [
            "breakwater_dispatch_actions_dead_lettered_total{endpoint=\"http://a:1\"} 1",
            "breakwater_dispatch_queue_depth 3",
            "breakwater_dispatch_backlog_actions{endpoint=\"http://a:1\"} 7",
            "breakwater_dispatch_backlog_oldest_age_seconds{endpoint=\"http://a:1\"} 5",
            "breakwater_dispatch_actions_over_quota_total{endpoint=\"http://a:1\"} 1",
            "breakwater_dispatch_intake_refused_total{reason=\"unavailable\"} 1",
            "breakwater_dispatch_oldest_pending_age_seconds 0",
            "breakwater_dispatch_delivery_latency_seconds_count 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}

//! The webhook's Prometheus metrics, kept in fixed arrays of atomics: every label has a
//! bounded set of values known in advance (kinds from the API, four operations, two
//! endpoints, three verdicts), so recording is a few relaxed increments and no lock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::engine::{GROUP, KINDS};
use crate::exposition::{Exposition, Type};

/// Which endpoint answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub const ALL: [Endpoint; 2] = [Endpoint::Validate, Endpoint::Mutate];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// What the webhook answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted (with or without a patch or warnings).
    Allowed,
    /// Denied by a rule.
    Denied,
    /// The request itself was unusable (not an AdmissionReview, too large, …).
    BadRequest,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Denied, Outcome::BadRequest];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::BadRequest => "bad_request",
        }
    }
}

const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "unknown"];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const KIND_SLOTS: usize = KINDS.len() + 1; // the last one is "other"
const REQUEST_SLOTS: usize = KIND_SLOTS * OPERATIONS.len() * 2 * 3;

struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1], // not cumulative; the last is +Inf
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// All webhook metrics.
pub struct Metrics {
    requests: Vec<AtomicU64>,
    latency: [Histogram; 2],
    cert_not_after: AtomicI64,
    cert_reloads: AtomicU64,
    cert_reload_failures: AtomicU64,
    snapshot_updates: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..REQUEST_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency: [Histogram::new(), Histogram::new()],
            cert_not_after: AtomicI64::new(0),
            cert_reloads: AtomicU64::new(0),
            cert_reload_failures: AtomicU64::new(0),
            snapshot_updates: AtomicU64::new(0),
        }
    }
}

fn kind_slot(group: &str, kind: &str) -> usize {
    if group != GROUP {
        return KINDS.len();
    }
    KINDS
        .iter()
        .position(|k| k.kind == kind)
        .unwrap_or(KINDS.len())
}

fn kind_label(slot: usize) -> &'static str {
    KINDS.get(slot).map_or("other", |k| k.kind)
}

fn operation_slot(operation: &str) -> usize {
    OPERATIONS[..4]
        .iter()
        .position(|op| *op == operation)
        .unwrap_or(4)
}

fn request_index(kind: usize, operation: usize, endpoint: usize, outcome: usize) -> usize {
    ((kind * OPERATIONS.len() + operation) * 2 + endpoint) * 3 + outcome
}

impl Metrics {
    /// Counts one answered request and its latency.
    pub fn record(
        &self,
        endpoint: Endpoint,
        group: &str,
        kind: &str,
        operation: &str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let index = request_index(
            kind_slot(group, kind),
            operation_slot(operation),
            endpoint as usize,
            outcome as usize,
        );
        self.requests[index].fetch_add(1, Ordering::Relaxed);
        self.latency[endpoint as usize].observe(elapsed);
    }

    pub fn set_cert_not_after(&self, unix_seconds: i64) {
        self.cert_not_after.store(unix_seconds, Ordering::Relaxed);
    }

    pub fn cert_reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.cert_reloads
        } else {
            &self.cert_reload_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot_updated(&self) {
        self.snapshot_updates.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self, ready: bool) -> String {
        let mut text = Exposition::new();
        self.encode_into(ready, &mut text);
        text.finish()
    }

    /// [`Metrics::encode`] into `text`.
    pub fn encode_into(&self, ready: bool, text: &mut Exposition) {
        self.encode_requests(text);
        self.encode_latency(text);
        text.single(
            "dbward_webhook_tls_certificate_expiry_seconds",
            Type::Gauge,
            "Expiry (notAfter) of the serving certificate, in seconds since the Unix epoch.",
            self.cert_not_after.load(Ordering::Relaxed),
        )
        .single(
            "dbward_webhook_tls_certificate_reloads_total",
            Type::Counter,
            "Serving certificates loaded from changed files.",
            self.cert_reloads.load(Ordering::Relaxed),
        )
        .single(
            "dbward_webhook_tls_certificate_reload_failures_total",
            Type::Counter,
            "Changed certificate files that could not be loaded.",
            self.cert_reload_failures.load(Ordering::Relaxed),
        )
        .single(
            "dbward_webhook_snapshot_updates_total",
            Type::Counter,
            "Snapshots of referenced objects swapped in.",
            self.snapshot_updates.load(Ordering::Relaxed),
        )
        .single(
            "dbward_webhook_ready",
            Type::Gauge,
            "Whether the webhook's caches have synced.",
            u8::from(ready),
        );
    }

    fn encode_requests(&self, text: &mut Exposition) {
        const NAME: &str = "dbward_webhook_requests_total";
        text.family(
            NAME,
            Type::Counter,
            "Admission reviews answered, by kind, operation, endpoint and verdict.",
        );
        for kind in 0..KIND_SLOTS {
            for (operation, op_label) in OPERATIONS.iter().enumerate() {
                for endpoint in Endpoint::ALL {
                    for outcome in Outcome::ALL {
                        let value = self.requests
                            [request_index(kind, operation, endpoint as usize, outcome as usize)]
                        .load(Ordering::Relaxed);
                        if value > 0 {
                            let labels = [
                                ("kind", kind_label(kind)),
                                ("operation", op_label),
                                ("endpoint", endpoint.as_str()),
                                ("verdict", outcome.as_str()),
                            ];
                            text.sample(NAME, &labels, value);
                        }
                    }
                }
            }
        }
    }

    fn encode_latency(&self, text: &mut Exposition) {
        const NAME: &str = "dbward_webhook_request_duration_seconds";
        text.family(
            NAME,
            Type::Histogram,
            "Time from the request's arrival to the answer.",
        );
        for endpoint in Endpoint::ALL {
            let histogram = &self.latency[endpoint as usize];
            let name = endpoint.as_str();
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += histogram.buckets[i].load(Ordering::Relaxed);
                let le = le.to_string();
                text.sample(
                    "dbward_webhook_request_duration_seconds_bucket",
                    &[("endpoint", name), ("le", &le)],
                    cumulative,
                );
            }
            cumulative += histogram.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            text.sample(
                "dbward_webhook_request_duration_seconds_bucket",
                &[("endpoint", name), ("le", "+Inf")],
                cumulative,
            )
            .sample(
                "dbward_webhook_request_duration_seconds_sum",
                &[("endpoint", name)],
                sum,
            )
            .sample(
                "dbward_webhook_request_duration_seconds_count",
                &[("endpoint", name)],
                cumulative,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_bounded_labels() {
        let metrics = Metrics::default();
        let ms = Duration::from_micros(300);
        metrics.record(
            Endpoint::Validate,
            "dbward.dev",
            "ConnectionPool",
            "CREATE",
            Outcome::Denied,
            ms,
        );
        metrics.record(
            Endpoint::Validate,
            "dbward.dev",
            "ConnectionPool",
            "CREATE",
            Outcome::Denied,
            ms,
        );
        metrics.record(
            Endpoint::Mutate,
            "apps",
            "Deployment",
            "PATCH",
            Outcome::Allowed,
            ms,
        );
        metrics.set_cert_not_after(1_900_000_000);
        let text = metrics.encode(true);
        assert!(text.contains(
            "dbward_webhook_requests_total{kind=\"ConnectionPool\",operation=\"CREATE\",endpoint=\"validate\",verdict=\"denied\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "dbward_webhook_requests_total{kind=\"other\",operation=\"unknown\",endpoint=\"mutate\",verdict=\"allowed\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "dbward_webhook_request_duration_seconds_bucket{endpoint=\"validate\",le=\"0.0005\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "dbward_webhook_request_duration_seconds_bucket{endpoint=\"validate\",le=\"0.00025\"} 0\n"
        ), "{text}");
        assert!(
            text.contains("dbward_webhook_request_duration_seconds_count{endpoint=\"mutate\"} 1\n")
        );
        assert!(text.contains("dbward_webhook_tls_certificate_expiry_seconds 1900000000\n"));
        assert!(text.contains("dbward_webhook_ready 1\n"));
    }
}

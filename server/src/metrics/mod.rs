//! The server's Prometheus metrics, served by `GET /metrics` in the OpenMetrics text format.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed label sets, no
//! macros, and an encoder for exactly the format Prometheus scrapes. One [`Metrics`] per process
//! ([`global`]): the engine counts grants, hand-offs, releases, expiries, waits, holds, journal
//! syncs and etcd calls where they happen; the HTTP layer counts requests; the gauges (locks
//! held, waiters, leases) are read from the backend when scraped. Counting is a few atomic
//! additions per request.

mod histogram;

use std::sync::OnceLock;
use std::time::Duration;

pub use histogram::AtomicHistogram;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a lock was granted.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Prometheus shows them
pub enum How {
    /// At once: it was free.
    immediate,
    /// To the head waiter, when the holder released or expired.
    handoff,
}

/// What expired.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum What {
    /// A hold, at its deadline.
    lock,
    /// A lease not kept alive.
    lease,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabel {
    how: How,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: What,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// Makes the per-route latency histograms.
#[derive(Debug, Clone, Copy)]
struct RouteLatency;

impl prometheus_client::metrics::family::MetricConstructor<AtomicHistogram> for RouteLatency {
    fn new_metric(&self) -> AtomicHistogram {
        // 50 µs to about 26 s.
        AtomicHistogram::seconds(Duration::from_micros(50), 20)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EtcdCall {
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    backend: &'static str,
}

/// Every series the server exports.
pub struct Metrics {
    registry: Registry,
    locks_held: Gauge,
    waiters: Gauge,
    leases: Gauge,
    grants: Family<HowLabel, Counter>,
    releases: Counter,
    expiries: Family<WhatLabel, Counter>,
    wait_seconds: AtomicHistogram,
    hold_seconds: AtomicHistogram,
    http_requests: Family<RouteStatus, Counter>,
    http_seconds: Family<RouteLabel, AtomicHistogram, RouteLatency>,
    journal_sync_seconds: AtomicHistogram,
    journal_batch_records: AtomicHistogram,
    etcd_requests: Family<EtcdCall, Counter>,
    build_info: Family<BuildLabels, Gauge>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// What the backend holds now, read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Locks held.
    pub locks_held: u64,
    /// Requests queued for locks (on the etcd backend: through this gateway).
    pub waiters: u64,
    /// Leases alive.
    pub leases: u64,
}

fn seconds_histogram() -> AtomicHistogram {
    // 100 µs to about 55 minutes.
    AtomicHistogram::seconds(Duration::from_micros(100), 25)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            locks_held: Gauge::default(),
            waiters: Gauge::default(),
            leases: Gauge::default(),
            grants: Family::default(),
            releases: Counter::default(),
            expiries: Family::default(),
            wait_seconds: seconds_histogram(),
            hold_seconds: seconds_histogram(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(RouteLatency),
            journal_sync_seconds: AtomicHistogram::seconds(Duration::from_micros(50), 18),
            journal_batch_records: AtomicHistogram::new(1, 14, 1.0),
            etcd_requests: Family::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("lockserver_locks_held", "Locks held now", metrics.locks_held.clone());
        r.register("lockserver_waiters", "Requests queued for locks now", metrics.waiters.clone());
        r.register("lockserver_leases", "Leases alive now", metrics.leases.clone());
        r.register("lockserver_grants", "Locks granted, at once or by hand-off", metrics.grants.clone());
        r.register("lockserver_releases", "Holds released", metrics.releases.clone());
        r.register("lockserver_expiries", "Holds and leases that expired", metrics.expiries.clone());
        r.register("lockserver_wait_seconds", "Time queued before a grant", metrics.wait_seconds.clone());
        r.register(
            "lockserver_hold_seconds",
            "Time from grant to release or expiry",
            metrics.hold_seconds.clone(),
        );
        r.register("lockserver_http_requests", "HTTP requests answered", metrics.http_requests.clone());
        r.register(
            "lockserver_http_request_duration_seconds",
            "HTTP request latency",
            metrics.http_seconds.clone(),
        );
        r.register(
            "lockserver_journal_sync_seconds",
            "Durable store: time of each write and fdatasync",
            metrics.journal_sync_seconds.clone(),
        );
        r.register(
            "lockserver_journal_batch_records",
            "Durable store: records made durable by each sync",
            metrics.journal_batch_records.clone(),
        );
        r.register(
            "lockserver_etcd_requests",
            "etcd backend: operations by result",
            metrics.etcd_requests.clone(),
        );
        r.register("lockserver_build_info", "The server's version and backend", metrics.build_info.clone());
        // Series of fixed labels exist from the start, at 0, so that rates and alerts on them
        // work before the first event.
        for how in [How::immediate, How::handoff] {
            let _ = metrics.grants.get_or_create(&HowLabel { how });
        }
        for what in [What::lock, What::lease] {
            let _ = metrics.expiries.get_or_create(&WhatLabel { what });
        }
        Metrics { registry, ..metrics }
    }

    /// Says which backend this process serves (`lockserver_build_info`).
    pub fn set_backend(&self, backend: &'static str) {
        let labels = BuildLabels { version: env!("CARGO_PKG_VERSION"), backend };
        self.build_info.get_or_create(&labels).set(1);
    }

    /// A lock was granted.
    pub fn granted(&self, how: How) {
        self.grants.get_or_create(&HowLabel { how }).inc();
    }

    /// A queued request was granted after waiting this long.
    pub fn waited(&self, queued: Duration) {
        self.wait_seconds.observe_duration(queued);
    }

    /// A hold ended by release (`expired: false`) or expiry, after `held` (when known).
    pub fn ended(&self, expired: bool, held: Option<Duration>) {
        if expired {
            self.expiries.get_or_create(&WhatLabel { what: What::lock }).inc();
        } else {
            self.releases.inc();
        }
        if let Some(held) = held {
            self.hold_seconds.observe_duration(held);
        }
    }

    /// A lease expired.
    pub fn lease_expired(&self) {
        self.expiries.get_or_create(&WhatLabel { what: What::lease }).inc();
    }

    /// An HTTP request to `route` (its pattern) was answered.
    pub fn http(&self, route: &str, status: u16, took: Duration) {
        let route = route_label(route);
        self.http_requests.get_or_create(&RouteStatus { route, status }).inc();
        self.http_seconds.get_or_create(&RouteLabel { route }).observe_duration(took);
    }

    /// The journal wrote and synced `records` records in `took`.
    pub fn journal_synced(&self, took: Duration, records: usize) {
        self.journal_sync_seconds.observe_duration(took);
        self.journal_batch_records.observe(records as u64);
    }

    /// An operation of the etcd backend ended.
    pub fn etcd(&self, op: &'static str, ok: bool) {
        self.etcd_requests.get_or_create(&EtcdCall { op, result: if ok { "ok" } else { "error" } }).inc();
    }

    /// The whole exposition, with the gauges set to `gauges`.
    pub fn encode(&self, gauges: Gauges) -> String {
        self.locks_held.set(gauges.locks_held as i64);
        self.waiters.set(gauges.waiters as i64);
        self.leases.set(gauges.leases as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// The API's route patterns, as labels: the route table's own strings; anything else is
/// `unmatched`, so that no client can grow the label set.
const ROUTES: [&str; 10] = [
    "/health",
    "/metrics",
    "/acquire",
    "/release",
    "/refresh",
    "/locks",
    "/locks/{resource:.+}",
    "/leases",
    "/leases/{id}",
    "/leases/{id}/keepalive",
];

fn route_label(route: &str) -> &'static str {
    ROUTES.iter().find(|known| **known == route).copied().unwrap_or("unmatched")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_have_their_names_and_types() {
        let metrics = Metrics::new();
        metrics.set_backend("embedded");
        metrics.granted(How::handoff);
        metrics.waited(Duration::from_millis(3));
        metrics.ended(true, Some(Duration::from_secs(1)));
        metrics.http("/acquire", 200, Duration::from_micros(80));
        let text = metrics.encode(Gauges { locks_held: 2, waiters: 1, leases: 0 });
        for line in [
            "# TYPE lockserver_locks_held gauge",
            "lockserver_locks_held 2",
            "# TYPE lockserver_grants counter",
            "lockserver_grants_total{how=\"handoff\"} 1",
            "lockserver_expiries_total{what=\"lock\"} 1",
            "# TYPE lockserver_wait_seconds histogram",
            "lockserver_http_requests_total{route=\"/acquire\",status=\"200\"} 1",
            "lockserver_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

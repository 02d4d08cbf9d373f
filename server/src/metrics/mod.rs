//! The server's Prometheus metrics, served by `GET /metrics` in the OpenMetrics text format.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed label sets, no
//! macros, and an encoder for exactly the format Prometheus scrapes. One [`Metrics`] per process
//! ([`global`]): the engine counts grants, hand-offs, releases, expiries, waits, holds, journal
//! syncs and etcd calls where they happen; the HTTP layer counts requests; the gauges (locks
//! held, waiters, leases) are read from the backend when scraped.
//!
//! What is counted on every request goes to per-thread tallies (`tally.rs`), laid out in the
//! slots below and handed to the registry's metrics when scraped; counting is then a few
//! additions to memory no other core touches.

mod histogram;
mod tally;

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use histogram::bucket_of;
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
    status: &'static str,
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
        AtomicHistogram::seconds(Duration::from_nanos(HTTP_BASE_NS), HTTP_BUCKETS)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EtcdCall {
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyOutcome {
    key: String,
    outcome: &'static str,
}

/// One API key's request counters, fetched when the key is loaded: counting is then one atomic
/// addition.
#[derive(Debug, Clone, Default)]
pub struct KeyCounters {
    /// Requests authenticated by the key and within its rate.
    pub accepted: Counter,
    /// Requests refused for its rate.
    pub rate_limited: Counter,
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
    key_requests: Family<KeyOutcome, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    /// The tallies as last handed to the metrics above.
    flushed: Mutex<Vec<u64>>,
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
    AtomicHistogram::seconds(Duration::from_nanos(SECONDS_BASE_NS), SECONDS_BUCKETS)
}

// The tally slots: HTTP requests by route and status, HTTP latency by route (buckets, then the
// sum in nanoseconds), grants by how, releases, expiries by what, waits and holds (buckets,
// then the sum).

/// The status codes counted by name; any other is `other`.
const STATUSES: [&str; 13] =
    ["200", "400", "401", "403", "404", "405", "408", "409", "413", "429", "500", "503", "other"];
/// The codes of `STATUSES` as numbers, in the same order (`other` is the index past them).
const STATUS_CODES: [u16; 12] = [200, 400, 401, 403, 404, 405, 408, 409, 413, 429, 500, 503];
const ROUTE_COUNT: usize = ROUTES.len() + 1; // and `unmatched`
/// Latency buckets: 50 µs doubling to about 26 s, then +Inf.
const HTTP_BASE_NS: u64 = 50_000;
const HTTP_BUCKETS: usize = 20;
/// Wait and hold buckets: 100 µs doubling to about 55 minutes, then +Inf.
const SECONDS_BASE_NS: u64 = 100_000;
const SECONDS_BUCKETS: usize = 25;

const HTTP_REQUESTS: usize = 0;
const HTTP_LATENCY: usize = HTTP_REQUESTS + ROUTE_COUNT * STATUSES.len();
const HTTP_LATENCY_WIDTH: usize = HTTP_BUCKETS + 2;
const GRANTS: usize = HTTP_LATENCY + ROUTE_COUNT * HTTP_LATENCY_WIDTH;
const RELEASES: usize = GRANTS + 2;
const EXPIRIES: usize = RELEASES + 1;
const WAITS: usize = EXPIRIES + 2;
const SECONDS_WIDTH: usize = SECONDS_BUCKETS + 2;
const HOLDS: usize = WAITS + SECONDS_WIDTH;
/// How many tally slots there are.
const SLOTS: usize = HOLDS + SECONDS_WIDTH;

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Tallies one observation of `value` nanoseconds into the histogram slots starting at `first`.
fn tally_seconds(first: usize, value: u64, base: u64, len: usize) {
    tally::add(first + bucket_of(value, base, len), 1);
    tally::add(first + len + 1, value);
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
            key_requests: Family::default(),
            build_info: Family::default(),
            flushed: Mutex::new(vec![0; SLOTS]),
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
        r.register(
            "lockserver_key_requests",
            "Requests by API key (its name) and outcome: accepted or rate_limited",
            metrics.key_requests.clone(),
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

    /// The request counters of the API key named `key` (the same ones each time it is asked,
    /// so a key keeps its series across reloads).
    pub fn key_counters(&self, key: &str) -> KeyCounters {
        let counter =
            |outcome| self.key_requests.get_or_create(&KeyOutcome { key: key.to_string(), outcome }).clone();
        KeyCounters { accepted: counter("accepted"), rate_limited: counter("rate_limited") }
    }

    /// Says which backend this process serves (`lockserver_build_info`).
    pub fn set_backend(&self, backend: &'static str) {
        let labels = BuildLabels { version: env!("CARGO_PKG_VERSION"), backend };
        self.build_info.get_or_create(&labels).set(1);
    }

    /// A lock was granted.
    pub fn granted(&self, how: How) {
        tally::add(GRANTS + how as usize, 1);
    }

    /// A queued request was granted after waiting this long.
    pub fn waited(&self, queued: Duration) {
        tally_seconds(WAITS, nanos(queued), SECONDS_BASE_NS, SECONDS_BUCKETS);
    }

    /// A hold ended by release (`expired: false`) or expiry, after `held` (when known).
    pub fn ended(&self, expired: bool, held: Option<Duration>) {
        tally::add(if expired { EXPIRIES + What::lock as usize } else { RELEASES }, 1);
        if let Some(held) = held {
            tally_seconds(HOLDS, nanos(held), SECONDS_BASE_NS, SECONDS_BUCKETS);
        }
    }

    /// A lease expired.
    pub fn lease_expired(&self) {
        tally::add(EXPIRIES + What::lease as usize, 1);
    }

    /// An HTTP request to `route` (its pattern) was answered.
    pub fn http(&self, route: &str, status: u16, took: Duration) {
        let route = ROUTES.iter().position(|known| *known == route).unwrap_or(ROUTES.len());
        let status = STATUS_CODES.iter().position(|known| *known == status).unwrap_or(STATUS_CODES.len());
        tally::add(HTTP_REQUESTS + route * STATUSES.len() + status, 1);
        tally_seconds(HTTP_LATENCY + route * HTTP_LATENCY_WIDTH, nanos(took), HTTP_BASE_NS, HTTP_BUCKETS);
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

    /// Hands what the tallies counted since the last scrape to the registry's metrics.
    fn flush(&self) {
        let totals = tally::totals();
        let mut flushed = self.flushed.lock().unwrap_or_else(PoisonError::into_inner);
        let new: Vec<u64> = totals.iter().zip(flushed.iter()).map(|(now, then)| now - then).collect();
        *flushed = totals;
        drop(flushed);
        let route_label = |route: usize| ROUTES.get(route).copied().unwrap_or("unmatched");
        for route in 0..ROUTE_COUNT {
            for (index, status) in STATUSES.iter().enumerate() {
                let count = new[HTTP_REQUESTS + route * STATUSES.len() + index];
                if count > 0 {
                    self.http_requests
                        .get_or_create(&RouteStatus { route: route_label(route), status })
                        .inc_by(count);
                }
            }
            let latency = &new[HTTP_LATENCY + route * HTTP_LATENCY_WIDTH..][..HTTP_LATENCY_WIDTH];
            if latency.iter().any(|count| *count > 0) {
                let histogram = self.http_seconds.get_or_create(&RouteLabel { route: route_label(route) });
                hand_over(&histogram, latency);
            }
        }
        for how in [How::immediate, How::handoff] {
            self.grants.get_or_create(&HowLabel { how }).inc_by(new[GRANTS + how as usize]);
        }
        self.releases.inc_by(new[RELEASES]);
        for what in [What::lock, What::lease] {
            self.expiries.get_or_create(&WhatLabel { what }).inc_by(new[EXPIRIES + what as usize]);
        }
        hand_over(&self.wait_seconds, &new[WAITS..][..SECONDS_WIDTH]);
        hand_over(&self.hold_seconds, &new[HOLDS..][..SECONDS_WIDTH]);
    }

    /// The whole exposition, with the gauges set to `gauges`.
    pub fn encode(&self, gauges: Gauges) -> String {
        self.flush();
        self.locks_held.set(gauges.locks_held as i64);
        self.waiters.set(gauges.waiters as i64);
        self.leases.set(gauges.leases as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// Adds tallied histogram slots (buckets, then the sum) to `histogram`.
fn hand_over(histogram: &AtomicHistogram, slots: &[u64]) {
    let (buckets, sum) = slots.split_at(slots.len() - 1);
    for (index, count) in buckets.iter().enumerate() {
        if *count > 0 {
            histogram.add(index, *count, 0);
        }
    }
    histogram.add(0, 0, sum[0]);
}

/// The API's route patterns, as labels: the route table's own strings; anything else is
/// `unmatched`, so that no client can grow the label set.
const ROUTES: [&str; 12] = [
    "/health",
    "/metrics",
    "/ui",
    "/acquire",
    "/release",
    "/refresh",
    "/locks",
    "/watch",
    "/locks/{resource:.+}",
    "/leases",
    "/leases/{id}",
    "/leases/{id}/keepalive",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_and_labels_agree() {
        assert_eq!(STATUSES.len(), STATUS_CODES.len() + 1);
        for (code, label) in STATUS_CODES.iter().zip(STATUSES) {
            assert_eq!(code.to_string(), label);
        }
    }

    #[test]
    fn the_series_have_their_names_and_types() {
        // The tallies are the process's: other tests add to them too, so only presence and
        // growth are checked.
        let metrics = Metrics::new();
        metrics.set_backend("embedded");
        metrics.granted(How::handoff);
        metrics.waited(Duration::from_millis(3));
        metrics.ended(true, Some(Duration::from_secs(1)));
        metrics.http("/acquire", 200, Duration::from_micros(80));
        metrics.http("/nowhere", 599, Duration::from_micros(80));
        let text = metrics.encode(Gauges { locks_held: 2, waiters: 1, leases: 0 });
        for line in [
            "# TYPE lockserver_locks_held gauge",
            "lockserver_locks_held 2",
            "# TYPE lockserver_grants counter",
            "lockserver_grants_total{how=\"handoff\"} ",
            "lockserver_expiries_total{what=\"lock\"} ",
            "# TYPE lockserver_wait_seconds histogram",
            "lockserver_wait_seconds_bucket{le=\"0.0032\"} ",
            "lockserver_http_requests_total{route=\"/acquire\",status=\"200\"} ",
            "lockserver_http_requests_total{route=\"unmatched\",status=\"other\"} ",
            "lockserver_http_request_duration_seconds_count{route=\"/acquire\"} ",
            "lockserver_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let before = metrics.encode(Gauges::default());
        metrics.granted(How::immediate);
        let after = metrics.encode(Gauges::default());
        let immediate = |text: &str| -> u64 {
            let line = text
                .lines()
                .find(|line| line.starts_with("lockserver_grants_total{how=\"immediate\"}"))
                .unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(immediate(&after) > immediate(&before));
    }
}

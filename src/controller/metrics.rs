//! The operator's Prometheus metrics (served on `/metrics`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::scan::ChunkCounts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Every metric the operator exports, registered once.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    ingest_bytes: Counter,
    ingest_parts: Counter,
    chunks: Family<StateLabel, Gauge>,
    leader: Gauge,
    token_requests: Family<ResultLabel, Counter>,
    sts_requests: Family<ResultLabel, Counter>,
    identity_cache_hits: Counter,
    /// Chunk counts of each scan in progress, by uid: the gauges are their sums.
    scans: Mutex<HashMap<String, ChunkCounts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("s3flow");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            errors.clone(),
        );
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 4.0, 8))) as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            durations.clone(),
        );
        let ingest_bytes = Counter::default();
        registry.register(
            "ingest_bytes",
            "Bytes of S3Ingest sources committed to S3 as parts",
            ingest_bytes.clone(),
        );
        let ingest_parts = Counter::default();
        registry.register(
            "ingest_parts",
            "Parts of S3Ingest uploads committed to S3",
            ingest_parts.clone(),
        );
        let chunks = Family::<StateLabel, Gauge>::default();
        registry.register(
            "scan_chunks",
            "Chunks of the S3ParallelScans in progress, by state",
            chunks.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader Lease and reconciles",
            leader.clone(),
        );
        let token_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "identity_token_requests",
            "ServiceAccount tokens requested (TokenRequest) for tenant identities, by result",
            token_requests.clone(),
        );
        let sts_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "identity_sts_requests",
            "AssumeRoleWithWebIdentity calls for tenant identities, by result",
            sts_requests.clone(),
        );
        let identity_cache_hits = Counter::default();
        registry.register(
            "identity_cache_hits",
            "Tenant identities served from the operator's credentials cache",
            identity_cache_hits.clone(),
        );
        Self {
            registry,
            token_requests,
            sts_requests,
            identity_cache_hits,
            reconciles,
            errors,
            durations,
            ingest_bytes,
            ingest_parts,
            chunks,
            leader,
            scans: Mutex::default(),
        }
    }
}

impl Metrics {
    /// The exposition text for a scrape.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Counts a reconcile of `controller` and times it until the returned guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller` as `reason` (`Error::metric_label` or `panic`).
    pub fn reconcile_failed(&self, controller: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }

    /// Adds the bytes and parts an ingest committed to S3 since its last progress.
    pub fn ingested(&self, bytes: u64, parts: u64) {
        self.ingest_bytes.inc_by(bytes);
        self.ingest_parts.inc_by(parts);
    }

    /// Counts a TokenRequest for a tenant identity (`result`: `ok` or the refusal's reason).
    pub fn token_requested(&self, result: &'static str) {
        self.token_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts an STS exchange for a tenant identity (`result`: `ok` or the refusal's reason).
    pub fn sts_requested(&self, result: &'static str) {
        self.sts_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a tenant identity served from the credentials cache.
    pub fn identity_cache_hit(&self) {
        self.identity_cache_hits.inc();
    }

    /// Sets `s3flow_leader`: 1 while this process holds the leader Lease and reconciles.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records a scan's chunk counts; `None` once it has finished or gone.
    pub fn scan_chunks(&self, uid: &str, counts: Option<ChunkCounts>) {
        let mut scans = self.scans.lock().expect("lock");
        match counts {
            Some(counts) => scans.insert(uid.to_string(), counts),
            None => scans.remove(uid),
        };
        let sum =
            |field: fn(&ChunkCounts) -> i32| scans.values().map(|c| i64::from(field(c))).sum();
        for (state, value) in [
            ("pending", sum(|c| c.pending)),
            ("running", sum(|c| c.running)),
            ("succeeded", sum(|c| c.succeeded)),
            ("failed", sum(|c| c.failed)),
        ] {
            self.chunks.get_or_create(&StateLabel { state }).set(value);
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabel {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_sums_what_was_recorded() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("ingest"));
        metrics.reconcile_failed("scan", "kube");
        metrics.ingested(10, 1);
        metrics.ingested(5, 2);
        let counts = |pending, succeeded| ChunkCounts {
            pending,
            running: 1,
            succeeded,
            failed: 0,
        };
        metrics.scan_chunks("a", Some(counts(3, 4)));
        metrics.scan_chunks("b", Some(counts(1, 2)));
        metrics.scan_chunks("b", Some(counts(0, 3)));
        let text = metrics.encode();
        for line in [
            "s3flow_reconciles_total{controller=\"ingest\"} 1",
            "s3flow_reconcile_errors_total{controller=\"scan\",reason=\"kube\"} 1",
            "s3flow_ingest_bytes_total 15",
            "s3flow_ingest_parts_total 3",
            "s3flow_scan_chunks{state=\"pending\"} 3",
            "s3flow_scan_chunks{state=\"running\"} 2",
            "s3flow_scan_chunks{state=\"succeeded\"} 7",
            "s3flow_reconcile_duration_seconds_count{controller=\"ingest\"} 1",
            "s3flow_leader 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        metrics.scan_chunks("a", None);
        assert!(
            metrics
                .encode()
                .contains("s3flow_scan_chunks{state=\"succeeded\"} 3")
        );
    }
}

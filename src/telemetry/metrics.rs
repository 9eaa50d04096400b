//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! One process-wide registry: the gateway, the sandbox and the tenancy stages
//! (rate limit, quota, cache) all count into it through [`metrics()`], so none
//! of them needs a handle threaded through its constructor. Labels are bounded
//! sets (tenant names from policy files, routes, status codes, fixed outcome
//! names); never anything a client chooses freely.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The tenant label of requests that never got as far as authentication.
pub const NO_TENANT: &str = "-";

pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` families (CPU, memory, open fds), without
    /// the `pyexec_` prefix that dashboards for any process expect them bare.
    process: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    http_connections_open: IntGauge,
    http_connections_refused: IntCounterVec,
    http_connections_closed: IntCounterVec,
    http_response_buffer_bytes: IntGauge,
    http_response_buffer_rejections: IntCounterVec,
    sandbox_runs: HistogramVec,
    sandbox_in_progress: IntGaugeVec,
    sandbox_queue_depth: IntGauge,
    sandbox_slots: IntGauge,
    sandbox_slots_in_use: IntGaugeVec,
    sandbox_runs_waiting: IntGaugeVec,
    sandbox_rejections: IntCounterVec,
    sandbox_ready: IntGauge,
    cache: IntCounterVec,
    rate_limited: IntCounterVec,
    quota_rejections: IntCounterVec,
    warm_zygotes: IntGauge,
    warm_zygotes_started: IntCounter,
    warm_zygote_failures: IntCounter,
    warm_runs: IntCounter,
    warm_runs_waited: IntCounter,
    redis_available: IntGauge,
    redis_quota_writes_buffered: IntGauge,
    redis_failures: IntCounter,
    redis_per_replica_decisions: IntCounter,
    redis_refusals: IntCounter,
    redis_quota_writes_flushed: IntCounter,
    redis_cache_values_too_large: IntCounter,
    sandbox_cpu: CounterVec,
    quota_used: IntGaugeVec,
    quota_limit: IntGaugeVec,
}

/// The warm pool's state, read from the pool at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct WarmPoolSample {
    pub zygotes: u64,
    /// The rest only grow.
    pub zygotes_started: u64,
    pub zygote_failures: u64,
    pub runs: u64,
    pub runs_that_waited_for_a_runner: u64,
}

/// The shared Redis store's state, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisSample {
    pub available: bool,
    pub buffered_quota_writes: u64,
    /// The rest only grow.
    pub failures: u64,
    pub per_replica_decisions: u64,
    pub refused: u64,
    pub flushed_quota_writes: u64,
    pub cache_values_too_large: u64,
}

/// Brings a counter up to a total its source keeps (a sampled counter only
/// grows, so a scrape that lags one never sees it go back).
fn follow(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Seconds buckets from 0.5 ms to ~65 s, doubling: a cache hit (~0.05 ms
/// lands in the first), a warm run (~2-4 ms), a cold one (~100 ms), a pandas
/// import and a run that reaches the 30 s limit each land in their own range.
fn duration_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("pyexec".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(duration_buckets()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let build_info = gauge_vec(
            "build_info",
            "Always 1; the labels say which build is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let sandbox_cpu = CounterVec::new(
            Opts::new(
                "sandbox_cpu_seconds_total",
                "CPU seconds the sandboxes' cgroups used, by tenant.",
            ),
            &["tenant"],
        )
        .expect("valid metric");
        let single_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let process = Registry::new();
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        registry
            .register(Box::new(sandbox_cpu.clone()))
            .expect("unique metric");
        Self {
            http_requests: counter(
                "http_requests_total",
                "HTTP requests answered, by tenant, route and status code.",
                &["tenant", "route", "status"],
            ),
            http_duration: histogram(
                "http_request_duration_seconds",
                "Time from request to response, by tenant and route.",
                &["tenant", "route"],
            ),
            http_in_flight: gauge(
                "http_requests_in_flight",
                "Requests being handled right now.",
            ),
            http_connections_open: gauge(
                "http_connections_open",
                "Client connections open on the public listener.",
            ),
            http_connections_refused: counter(
                "http_connections_refused_total",
                "Connections past --max-connections: probes-only (answered 503 but for health probes) or closed at once.",
                &["reason"],
            ),
            http_connections_closed: counter(
                "http_connections_closed_total",
                "Connections the server closed: first-request-timeout (no request in time), idle (kept alive with nothing to do), write-timeout (a response its client did not read).",
                &["reason"],
            ),
            http_response_buffer_bytes: gauge(
                "http_response_buffer_bytes",
                "Bytes of large responses held for their clients right now (at most --response-buffer-bytes).",
            ),
            http_response_buffer_rejections: counter(
                "http_response_buffer_rejections_total",
                "Large responses answered 503 because the response budget stayed full for the write timeout.",
                &[],
            ),
            sandbox_runs: histogram(
                "sandbox_run_duration_seconds",
                "Wall-clock time of sandbox runs, by mode and outcome.",
                &["mode", "outcome"],
            ),
            sandbox_in_progress: gauge_vec(
                "sandbox_runs_in_progress",
                "Sandbox runs executing right now, by mode.",
                &["mode"],
            ),
            sandbox_queue_depth: gauge(
                "sandbox_queue_depth",
                "Runs waiting for a free sandbox slot.",
            ),
            sandbox_slots: gauge(
                "sandbox_slots",
                "Sandbox runs allowed at once (--max-concurrent).",
            ),
            sandbox_slots_in_use: gauge_vec(
                "sandbox_slots_in_use",
                "Sandbox slots held right now, by tenant (at most its maxConcurrentRuns).",
                &["tenant"],
            ),
            sandbox_runs_waiting: gauge_vec(
                "sandbox_runs_waiting",
                "Runs waiting for a sandbox slot right now, by tenant.",
                &["tenant"],
            ),
            sandbox_rejections: counter(
                "sandbox_rejections_total",
                "Runs turned away before they started (queue full or wait too long, sandbox unavailable, launch failure).",
                &["reason"],
            ),
            sandbox_ready: gauge(
                "sandbox_ready",
                "1 when the sandbox self-test has passed and scripts can run.",
            ),
            cache: counter(
                "cache_requests_total",
                "Result cache lookups by tenant and result (hit, miss, bypass).",
                &["tenant", "result"],
            ),
            rate_limited: counter(
                "rate_limit_rejections_total",
                "Requests refused by the tenant's rate limit.",
                &["tenant"],
            ),
            quota_rejections: counter(
                "quota_rejections_total",
                "Requests refused because a daily quota is used up, by tenant and quota (executions, cpu_seconds).",
                &["tenant", "quota"],
            ),
            warm_zygotes: gauge("warm_zygotes", "Warm zygotes alive right now."),
            warm_zygotes_started: single_counter(
                "warm_zygotes_started_total",
                "Warm zygotes started since the process started.",
            ),
            warm_zygote_failures: single_counter(
                "warm_zygote_failures_total",
                "Warm zygotes that failed to start or died.",
            ),
            warm_runs: single_counter("warm_runs_total", "Runs served by a warm runner."),
            warm_runs_waited: single_counter(
                "warm_runs_waited_for_runner_total",
                "Warm runs that waited for a runner to be made (none was ready).",
            ),
            redis_available: gauge("redis_available", "1 while the shared Redis store answers."),
            redis_quota_writes_buffered: gauge(
                "redis_quota_writes_buffered",
                "Quota usage waiting to be written to Redis (kept during an outage).",
            ),
            redis_failures: single_counter(
                "redis_failures_total",
                "Redis commands that failed or timed out.",
            ),
            redis_per_replica_decisions: single_counter(
                "redis_per_replica_decisions_total",
                "Decisions taken on this replica's own limits because Redis did not answer (onFailure: perReplica).",
            ),
            redis_refusals: single_counter(
                "redis_refusals_total",
                "Requests answered 503 because Redis did not answer (onFailure: closed).",
            ),
            redis_quota_writes_flushed: single_counter(
                "redis_quota_writes_flushed_total",
                "Buffered quota usage written to Redis once it answered again.",
            ),
            redis_cache_values_too_large: single_counter(
                "redis_cache_values_too_large_total",
                "Results too large to share through Redis (kept in memory only).",
            ),
            quota_used: gauge_vec(
                "quota_used",
                "Today's use of each daily quota (UTC day), by tenant and quota (executions, cpu_seconds); sampled at scrape time.",
                &["tenant", "quota"],
            ),
            quota_limit: gauge_vec(
                "quota_limit",
                "Each tenant's daily quota, by quota (executions, cpu_seconds).",
                &["tenant", "quota"],
            ),
            sandbox_cpu,
            registry,
            process,
        }
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new()
            .encode(&families, &mut buffer)
            .expect("text encoding cannot fail on valid metrics");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    pub fn http_request_started(&self) {
        self.http_in_flight.inc();
    }

    pub fn http_request_finished(&self, tenant: &str, route: &str, status: u16, took: Duration) {
        self.http_in_flight.dec();
        self.http_requests
            .with_label_values(&[tenant, route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[tenant, route])
            .observe(took.as_secs_f64());
    }

    pub fn set_connections_open(&self, open: usize) {
        self.http_connections_open.set(open as i64);
    }

    /// `reason`: `probes-only` or `closed`.
    pub fn connection_refused(&self, reason: &str) {
        self.http_connections_refused
            .with_label_values(&[reason])
            .inc();
    }

    /// `reason`: `first-request-timeout`, `idle` or `write-timeout`.
    pub fn connection_closed(&self, reason: &str) {
        self.http_connections_closed
            .with_label_values(&[reason])
            .inc();
    }

    pub fn response_buffer_changed(&self, by: i64) {
        self.http_response_buffer_bytes.add(by);
    }

    pub fn response_buffer_rejected(&self) {
        self.http_response_buffer_rejections
            .with_label_values::<&str>(&[])
            .inc();
    }

    pub fn sandbox_run_started(&self, mode: &str) {
        self.sandbox_in_progress.with_label_values(&[mode]).inc();
    }

    /// A run ended with a report. `planned` is the mode it was started in
    /// (it balances the in-progress gauge), `actual` the one it ran in (a warm
    /// pool may fall back to cold).
    pub fn sandbox_run_finished(&self, planned: &str, actual: &str, outcome: &str, took: Duration) {
        self.sandbox_in_progress.with_label_values(&[planned]).dec();
        self.sandbox_runs
            .with_label_values(&[actual, outcome])
            .observe(took.as_secs_f64());
    }

    /// A run that failed to launch or was dropped with its request: it leaves
    /// the in-progress gauge but has no duration worth a histogram sample.
    pub fn sandbox_run_ended_without_report(&self, mode: &str) {
        self.sandbox_in_progress.with_label_values(&[mode]).dec();
    }

    pub fn sandbox_cpu_used(&self, tenant: &str, cpu: Duration) {
        self.sandbox_cpu
            .with_label_values(&[tenant])
            .inc_by(cpu.as_secs_f64());
    }

    /// `reason`: `saturated`, `unavailable` or `launch-failed`.
    pub fn sandbox_rejected(&self, reason: &str) {
        self.sandbox_rejections.with_label_values(&[reason]).inc();
    }

    /// Sampled at scrape time from the sandbox itself, so they are never stale.
    pub fn set_sandbox_state(&self, queue_depth: usize, slots: usize, ready: bool) {
        self.sandbox_queue_depth.set(queue_depth as i64);
        self.sandbox_slots.set(slots as i64);
        self.sandbox_ready.set(ready as i64);
    }

    /// Each tenant's slots held and runs waiting, sampled at scrape time; a
    /// tenant with neither has no series.
    pub fn set_slot_use<'a>(&self, by_tenant: impl IntoIterator<Item = (&'a str, usize, usize)>) {
        self.sandbox_slots_in_use.reset();
        self.sandbox_runs_waiting.reset();
        for (tenant, running, waiting) in by_tenant {
            let label = [tenant];
            self.sandbox_slots_in_use
                .with_label_values(&label)
                .set(running as i64);
            self.sandbox_runs_waiting
                .with_label_values(&label)
                .set(waiting as i64);
        }
    }

    /// `result`: `hit`, `miss` or `bypass` (the `X-Cache` header's values, lower case).
    pub fn cache_lookup(&self, tenant: &str, result: &str) {
        self.cache.with_label_values(&[tenant, result]).inc();
    }

    pub fn rate_limited(&self, tenant: &str) {
        self.rate_limited.with_label_values(&[tenant]).inc();
    }

    /// `quota`: which quota ran out, e.g. `executions` or `cpu_seconds`.
    pub fn quota_exceeded(&self, tenant: &str, quota: &str) {
        self.quota_rejections
            .with_label_values(&[tenant, quota])
            .inc();
    }

    /// The Redis store's counters (the numbers and flags of its `/health`
    /// section), sampled by the `/metrics` handler.
    pub fn set_redis(&self, sample: RedisSample) {
        self.redis_available.set(i64::from(sample.available));
        self.redis_quota_writes_buffered
            .set(sample.buffered_quota_writes as i64);
        follow(&self.redis_failures, sample.failures);
        follow(
            &self.redis_per_replica_decisions,
            sample.per_replica_decisions,
        );
        follow(&self.redis_refusals, sample.refused);
        follow(
            &self.redis_quota_writes_flushed,
            sample.flushed_quota_writes,
        );
        follow(
            &self.redis_cache_values_too_large,
            sample.cache_values_too_large,
        );
    }

    /// One tenant's daily quota (`quota`: `executions` or `cpu_seconds`):
    /// its limit and today's use.
    pub fn set_quota(&self, tenant: &str, quota: &str, limit: u64, used: u64) {
        self.quota_limit
            .with_label_values(&[tenant, quota])
            .set(limit as i64);
        self.quota_used
            .with_label_values(&[tenant, quota])
            .set(used as i64);
    }

    pub fn set_warm_pool(&self, sample: WarmPoolSample) {
        self.warm_zygotes.set(sample.zygotes as i64);
        follow(&self.warm_zygotes_started, sample.zygotes_started);
        follow(&self.warm_zygote_failures, sample.zygote_failures);
        follow(&self.warm_runs, sample.runs);
        follow(&self.warm_runs_waited, sample.runs_that_waited_for_a_runner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_every_family_with_the_pyexec_prefix() {
        let m = metrics();
        m.http_request_started();
        m.http_request_finished("acme", "/execute", 200, Duration::from_millis(12));
        m.cache_lookup("acme", "miss");
        m.rate_limited("acme");
        m.quota_exceeded("acme", "executions");
        m.set_warm_pool(WarmPoolSample {
            zygotes: 2,
            runs: 10,
            ..WarmPoolSample::default()
        });
        let text = m.render();
        for needle in [
            "pyexec_http_requests_total{route=\"/execute\",status=\"200\",tenant=\"acme\"}",
            "pyexec_http_request_duration_seconds_bucket",
            "pyexec_cache_requests_total{result=\"miss\",tenant=\"acme\"}",
            "pyexec_rate_limit_rejections_total{tenant=\"acme\"}",
            "pyexec_quota_rejections_total{quota=\"executions\",tenant=\"acme\"}",
            "pyexec_warm_zygotes 2",
            "pyexec_warm_runs_total 10",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "pyexec_build_info{version=",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}

//! The Prometheus side both binaries share: a registry with the process's identity as constant
//! labels, heap and process collectors, and the HTTP endpoint (`/metrics`, `/healthz`,
//! `/readyz`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Counter, Encoder, IntCounter, IntGauge, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Histogram buckets for durations, from 100 µs to 20 minutes, in readable steps.
pub const SECONDS_BUCKETS: &[f64] = &[0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1200.0];

/// A registry whose every series carries `labels` (e.g. component="executor",
/// executor_id="executor-1"), with the heap and process collectors registered.
pub fn registry(labels: &[(&str, &str)]) -> prometheus::Result<Registry> {
    let labels: HashMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let registry = Registry::new_custom(None, Some(labels))?;
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(registry)
}

/// Heap gauges, refreshed from the allocator at every scrape, and CPU time at full resolution
/// (the process collector's `process_cpu_seconds_total` counts whole seconds only).
#[derive(Clone)]
struct HeapMetrics {
    live: IntGauge,
    peak: IntGauge,
    allocated: IntCounter,
    cpu: Counter,
}

/// User + system CPU seconds of this process, from /proc/self/stat (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    // Fields after the command name (which may hold spaces, so split after its ')'):
    // utime and stime are the 12th and 13th, in clock ticks of USER_HZ = 100 on Linux.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

impl HeapMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let live = IntGauge::with_opts(Opts::new("canopy_heap_live_bytes", "Heap bytes allocated and not freed (counting allocator)."))?;
        let peak = IntGauge::with_opts(Opts::new(
            "canopy_heap_peak_bytes",
            "Highest live heap bytes since the current job (executor) or run (driver) began.",
        ))?;
        let allocated = IntCounter::with_opts(Opts::new(
            "canopy_heap_allocated_bytes_total",
            "Heap bytes ever allocated; its rate is the allocation churn (Rust has no garbage collector).",
        ))?;
        registry.register(Box::new(live.clone()))?;
        registry.register(Box::new(peak.clone()))?;
        registry.register(Box::new(allocated.clone()))?;
        let cpu = Counter::with_opts(Opts::new(
            "canopy_process_cpu_seconds_total",
            "User and system CPU seconds of this process, at clock-tick resolution.",
        ))?;
        registry.register(Box::new(cpu.clone()))?;
        Ok(HeapMetrics { live, peak, allocated, cpu })
    }

    fn refresh(&self) {
        self.live.set(i64::try_from(crate::heap::live_bytes()).unwrap_or(i64::MAX));
        self.peak.set(i64::try_from(crate::heap::peak_bytes()).unwrap_or(i64::MAX));
        let total = crate::heap::allocated_bytes();
        self.allocated.inc_by(total.saturating_sub(self.allocated.get()));
        self.cpu.inc_by((cpu_seconds() - self.cpu.get()).max(0.0));
    }
}

#[derive(Clone)]
struct Endpoint {
    registry: Registry,
    heap: HeapMetrics,
    ready: Arc<AtomicBool>,
}

/// Renders the registry in Prometheus's text format (also what a Pushgateway accepts).
pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec fails only on invalid metric families, which the registry rejects.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    endpoint.heap.refresh();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], encode(&endpoint.registry))
}

async fn readiness(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    if endpoint.ready.load(Ordering::Relaxed) { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

/// Registers the heap metrics on `registry` and serves it on `listener` until `shutdown`.
/// `/readyz` answers 200 while `ready` is true; `/healthz` answers 200 while serving.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let heap = HeapMetrics::register(&registry).map_err(std::io::Error::other)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(Endpoint { registry, heap, ready });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

//! The driver's Prometheus metrics, its `/metrics` endpoint, and the Pushgateway push that keeps
//! short runs from being lost between scrapes. Every series carries component="driver".
//!
//! Labels stay bounded: `executors` (an executor count), `executor_id`, `phase`, `mode`. The run
//! id appears only in `canopy_driver_run_info`, one series at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use prometheus::{Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::{DriverError, Result};
use crate::results::RunResult;

#[derive(Clone)]
pub struct DriverMetrics {
    // Load gauges change only through the methods below, which keep the saturation in step.
    executors_registered: IntGauge,
    executors_alive: IntGauge,
    executors_wanted: IntGauge,
    tasks_pending: IntGauge,
    tasks_running: IntGauge,
    saturation: Gauge,
    executor_failures: IntCounter,
    pub tasks_retried: IntCounter,
    pub nodes_split: IntCounter,
    pub bytes_sent: IntCounter,
    pub bytes_received: IntCounter,
    phase_seconds: HistogramVec,
    runs: IntCounterVec,
    run_info: IntGaugeVec,
    run_train_seconds: GaugeVec,
    run_total_seconds: GaugeVec,
    run_accuracy: GaugeVec,
    run_weighted_f1: GaugeVec,
    run_driver_peak_heap: IntGaugeVec,
    run_executor_tasks: IntGaugeVec,
    run_executor_busy: GaugeVec,
    run_executor_peak_heap: IntGaugeVec,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl DriverMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let saturation = Gauge::with_opts(Opts::new(
            "canopy_driver_saturation_ratio",
            "Autoscaling signal: executors wanted / executors registered; above 1 means add executors, below 1 remove some.",
        ))?;
        r.register(Box::new(saturation.clone()))?;
        let phase_seconds = HistogramVec::new(
            HistogramOpts::new("canopy_driver_phase_duration_seconds", "Duration of run phases: prepare, connect, ship, train, evaluate.")
                .buckets(canopy_runtime::metrics::SECONDS_BUCKETS.to_vec()),
            &["phase"],
        )?;
        r.register(Box::new(phase_seconds.clone()))?;
        let runs = IntCounterVec::new(
            Opts::new("canopy_driver_runs_total", "Training runs finished, by mode and outcome."),
            &["mode", "outcome"],
        )?;
        r.register(Box::new(runs.clone()))?;
        let per_run = ["executors", "mode"];
        let per_executor = ["executors", "executor_id"];
        Ok(DriverMetrics {
            executors_registered: int_gauge(r, "canopy_driver_executors_registered", "Executors registered with the driver (its pool).")?,
            executors_alive: int_gauge(r, "canopy_driver_executors_alive", "Executors working for the current run (not lost, not left).")?,
            executors_wanted: int_gauge(
                r,
                "canopy_driver_executors_wanted",
                "Executors the driver can use now: during a job bounded by partitions and --max-executors, --min-executors when idle.",
            )?,
            tasks_pending: int_gauge(r, "canopy_driver_tasks_pending", "Tasks waiting to be sent to an executor (partitions to ship).")?,
            tasks_running: int_gauge(r, "canopy_driver_tasks_running", "Tasks sent to executors and not yet answered.")?,
            saturation,
            tasks_retried: counter(r, "canopy_driver_tasks_retried_total", "Task steps asked again after an executor was lost.")?,
            executor_failures: counter(
                r,
                "canopy_driver_executor_failures_total",
                "Executors declared lost (died, unreachable or silent).",
            )?,
            nodes_split: counter(r, "canopy_driver_tree_nodes_split_total", "Tree nodes split by the grower.")?,
            bytes_sent: counter(r, "canopy_driver_sent_bytes_total", "Bytes sent to executors: partitions and control messages.")?,
            bytes_received: counter(
                r,
                "canopy_driver_received_bytes_total",
                "Bytes of executor answers: histograms and confusion matrices.",
            )?,
            phase_seconds,
            runs,
            run_info: int_gauge_vec(r, "canopy_driver_run_info", "The run in progress or last finished (value 1).", &["run_id", "mode"])?,
            run_train_seconds: gauge_vec(
                r,
                "canopy_run_train_seconds",
                "Training time of the last run with this executor count.",
                &per_run,
            )?,
            run_total_seconds: gauge_vec(
                r,
                "canopy_run_total_seconds",
                "Total time (connect to metrics) of the last run with this executor count.",
                &per_run,
            )?,
            run_accuracy: gauge_vec(r, "canopy_run_accuracy", "Test accuracy of the last run with this executor count.", &per_run)?,
            run_weighted_f1: gauge_vec(
                r,
                "canopy_run_weighted_f1",
                "Test weighted F1 of the last run with this executor count.",
                &per_run,
            )?,
            run_driver_peak_heap: int_gauge_vec(
                r,
                "canopy_run_driver_peak_heap_bytes",
                "Driver peak heap of the last run with this executor count.",
                &per_run,
            )?,
            run_executor_tasks: int_gauge_vec(
                r,
                "canopy_run_executor_tasks",
                "Tasks each executor completed in the last run with this executor count.",
                &per_executor,
            )?,
            run_executor_busy: gauge_vec(
                r,
                "canopy_run_executor_busy_seconds",
                "Busy seconds of each executor in the last run with this executor count.",
                &per_executor,
            )?,
            run_executor_peak_heap: int_gauge_vec(
                r,
                "canopy_run_executor_peak_heap_bytes",
                "Peak heap of each executor in the last run with this executor count.",
                &per_executor,
            )?,
        })
    }

    /// Recomputes the saturation gauge: wanted per registered executor. An HPA that keeps it
    /// at 1 (desired = ceil(current x ratio)) lands on the wanted count in one step.
    fn update_saturation(&self) {
        let wanted = self.executors_wanted.get() as f64;
        let registered = self.executors_registered.get();
        self.saturation.set(if registered == 0 { wanted } else { wanted / registered as f64 });
    }

    /// The registry holds `n` executors.
    pub fn registry_size(&self, n: usize) {
        self.executors_registered.set(i64::try_from(n).unwrap_or(i64::MAX));
        self.update_saturation();
    }

    /// How many executors the driver can use now.
    pub fn set_wanted(&self, n: usize) {
        self.executors_wanted.set(i64::try_from(n).unwrap_or(i64::MAX));
        self.update_saturation();
    }

    /// `n` executors work for the current run.
    pub fn run_members(&self, n: usize) {
        self.executors_alive.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An executor was declared lost.
    pub fn executor_lost(&self) {
        self.executor_failures.inc();
    }

    /// Adds `pending` to the queued tasks and `running` to those in flight (either may be negative).
    pub fn tasks_moved(&self, pending: i64, running: i64) {
        self.tasks_pending.add(pending);
        self.tasks_running.add(running);
    }

    /// Nothing is queued any more (what a lost executor did not send is queued again on reassignment).
    pub fn pending_cleared(&self) {
        self.tasks_pending.set(0);
    }

    pub fn phase(&self, phase: &str, seconds: f64) {
        self.phase_seconds.with_label_values(&[phase]).observe(seconds);
    }

    pub fn run_started(&self, run_id: &str, mode: &str) {
        self.run_info.reset();
        self.run_info.with_label_values(&[run_id, mode]).set(1);
    }

    pub fn run_failed(&self, mode: &str) {
        self.runs.with_label_values(&[mode, "failed"]).inc();
    }

    /// Publishes a finished run's results under its executor count.
    pub fn run_finished(&self, r: &RunResult) {
        let executors = r.executors.to_string();
        let mode = r.mode.as_str();
        self.runs.with_label_values(&[mode, "ok"]).inc();
        let labels = [executors.as_str(), mode];
        self.run_train_seconds.with_label_values(&labels).set(r.timings.train_seconds);
        self.run_total_seconds.with_label_values(&labels).set(r.timings.total_seconds);
        self.run_accuracy.with_label_values(&labels).set(r.metrics.accuracy);
        self.run_weighted_f1.with_label_values(&labels).set(r.metrics.weighted_f1);
        self.run_driver_peak_heap.with_label_values(&labels).set(i64::try_from(r.driver_peak_heap_bytes).unwrap_or(i64::MAX));
        for e in r.executor_stats.iter().filter(|e| e.alive_at_end || e.left) {
            let labels = [executors.as_str(), e.executor_id.as_str()];
            self.run_executor_tasks.with_label_values(&labels).set(i64::try_from(e.tasks).unwrap_or(i64::MAX));
            self.run_executor_busy.with_label_values(&labels).set(e.busy_seconds_total());
            self.run_executor_peak_heap.with_label_values(&labels).set(i64::try_from(e.peak_heap_bytes).unwrap_or(i64::MAX));
        }
    }
}

/// The metrics endpoint, the Pushgateway and the linger period, around a driver command.
pub struct Observability {
    pub metrics: DriverMetrics,
    registry: Registry,
    pub addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pushgateway: Option<String>,
    linger: Duration,
}

impl Observability {
    pub async fn start(listen: Option<SocketAddr>, pushgateway: Option<String>, linger: Duration) -> Result<Self> {
        let registry = canopy_runtime::metrics::registry(&[("component", "driver")]).map_err(|e| DriverError::Internal(e.to_string()))?;
        let metrics = DriverMetrics::register(&registry).map_err(|e| DriverError::Internal(e.to_string()))?;
        let (stop, stop_rx) = watch::channel(false);
        let (mut addr, mut server) = (None, None);
        if let Some(listen) = listen {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| DriverError::Config(format!("cannot listen for metrics on {listen}: {e}")))?;
            let bound = listener.local_addr().map_err(|e| DriverError::Internal(e.to_string()))?;
            info!(addr = %bound, "driver metrics listening");
            let mut rx = stop_rx.clone();
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let ready = Arc::new(AtomicBool::new(true));
            server = Some(tokio::spawn(canopy_runtime::metrics::serve(listener, registry.clone(), ready, shutdown)));
            addr = Some(bound);
        }
        Ok(Observability { metrics, registry, addr, stop, server, pushgateway, linger })
    }

    /// Pushes the whole registry to the Pushgateway, if one was given; a failure is a warning.
    pub async fn push(&self) {
        let Some(url) = &self.pushgateway else { return };
        match push(url, "canopy_driver", canopy_runtime::metrics::encode(&self.registry)).await {
            Ok(()) => info!(%url, "metrics pushed"),
            Err(e) => warn!(%url, error = %e, "could not push metrics to the Pushgateway"),
        }
    }

    /// Final push, then keeps `/metrics` up for the linger period, then stops it.
    pub async fn finish(mut self) {
        self.push().await;
        if self.server.is_some() && !self.linger.is_zero() {
            info!(seconds = self.linger.as_secs_f64(), "keeping /metrics up before exiting");
            tokio::time::sleep(self.linger).await;
        }
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// `PUT {url}/metrics/job/{job}` with the text format: the Pushgateway's replace-all push.
pub async fn push(url: &str, job: &str, body: Vec<u8>) -> std::result::Result<(), String> {
    let path = format!("/metrics/job/{job}");
    let (status, _) = crate::http::send(crate::http::Method::PUT, url, &path, prometheus::TEXT_FORMAT, body).await?;
    if !(200..300).contains(&status) {
        return Err(format!("the Pushgateway answered HTTP {status}"));
    }
    Ok(())
}

//! The executor's Prometheus metrics. Every series also carries the registry's constant labels
//! component="executor" and executor_id.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The task kinds an executor runs (the `task_kind` label).
pub const TASK_KINDS: [&str; 7] =
    ["load_partition", "release_partition", "apply_splits", "histograms", "evaluate", "train_local_tree", "evaluate_ensemble"];

#[derive(Clone)]
pub struct ExecutorMetrics {
    tasks: IntCounterVec,
    task_seconds: HistogramVec,
    pub rows_held: IntGauge,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
    pub running: IntGauge,
    pub jobs: IntCounter,
}

impl ExecutorMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let tasks = IntCounterVec::new(
            Opts::new("canopy_executor_tasks_total", "Tasks finished, by task kind and outcome (ok or failed)."),
            &["task_kind", "outcome"],
        )?;
        let task_seconds = HistogramVec::new(
            HistogramOpts::new("canopy_executor_task_duration_seconds", "Time spent in each phase of a task, by task kind and phase.")
                .buckets(canopy_runtime::metrics::SECONDS_BUCKETS.to_vec()),
            &["task_kind", "phase"],
        )?;
        let rows_held = IntGauge::with_opts(Opts::new("canopy_executor_rows_held", "Rows (train and test) held for the current job."))?;
        let received_bytes =
            IntCounter::with_opts(Opts::new("canopy_executor_received_bytes_total", "Arrow Flight payload bytes of partitions received."))?;
        let sent_bytes = IntCounter::with_opts(Opts::new(
            "canopy_executor_sent_bytes_total",
            "Bytes of task answers sent (histograms, matrices, trees).",
        ))?;
        let running = IntGauge::with_opts(Opts::new("canopy_executor_tasks_running", "Tasks executing now."))?;
        let jobs = IntCounter::with_opts(Opts::new("canopy_executor_jobs_started_total", "Jobs started on this executor."))?;
        // Every kind and outcome exists from the start (at 0), so dashboards and alerts see
        // "no failures" rather than "no data".
        for kind in TASK_KINDS {
            for outcome in ["ok", "failed"] {
                tasks.with_label_values(&[kind, outcome]);
            }
        }
        registry.register(Box::new(tasks.clone()))?;
        registry.register(Box::new(task_seconds.clone()))?;
        registry.register(Box::new(rows_held.clone()))?;
        registry.register(Box::new(received_bytes.clone()))?;
        registry.register(Box::new(sent_bytes.clone()))?;
        registry.register(Box::new(running.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        Ok(ExecutorMetrics { tasks, task_seconds, rows_held, received_bytes, sent_bytes, running, jobs })
    }

    /// A registry that nobody scrapes, for executors started without a metrics endpoint.
    pub fn unregistered() -> prometheus::Result<Self> {
        Self::register(&Registry::new())
    }

    pub fn task_done(&self, task_kind: &str, ok: bool) {
        self.tasks.with_label_values(&[task_kind, if ok { "ok" } else { "failed" }]).inc();
    }

    pub fn observe(&self, task_kind: &str, phase: &str, seconds: f64) {
        self.task_seconds.with_label_values(&[task_kind, phase]).observe(seconds);
    }
}

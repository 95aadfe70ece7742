//! What a run produced, as plain data: the report and the metrics both read it, and nothing in
//! here calls back into the code that made it.

use std::collections::BTreeMap;

use canopy_tree::{ClassificationMetrics, ConfusionMatrix};
use serde::Serialize;

use crate::config::Mode;
use crate::model::ModelFile;

/// One executor's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutorReport {
    pub executor_id: String,
    pub addr: String,
    pub metrics_addr: String,
    pub pid: u32,
    /// Still working for the run when it ended (not lost, not left).
    pub alive_at_end: bool,
    /// Decommissioned mid-run: its partitions were moved away and its job ended early.
    pub left: bool,
    /// Seconds from the run's start to this executor's first task of the run (0 for those
    /// that started the job).
    pub joined_at_seconds: f64,
    /// Seconds from its registration with the driver (or the run's start, for an executor
    /// registered before it) to its first task of this run: the cost of joining.
    pub registration_to_first_task_seconds: Option<f64>,
    pub tasks: u64,
    pub busy_seconds: BTreeMap<String, f64>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub peak_heap_bytes: u64,
    /// The executor process's peak resident set size.
    pub peak_rss_bytes: u64,
    pub rows_held: u64,
}

impl ExecutorReport {
    /// Seconds the executor was busy, all phases (0, not -0, when it did nothing).
    pub fn busy_seconds_total(&self) -> f64 {
        self.busy_seconds.values().fold(0.0, |a, b| a + b)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GrowthReport {
    pub histogram_batches: u64,
    pub nodes_built: u64,
    pub nodes_derived: u64,
    pub nodes_split: u64,
    /// Trees grown (1 unless in forest mode); nodes and leaves are summed over them.
    pub trees: usize,
    pub tree_nodes: usize,
    pub tree_leaves: usize,
    pub tree_depth: u32,
}

/// Where a run's time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunTimings {
    /// Starting (if spawned) and connecting to executors, or waiting for them to register.
    pub connect_seconds: f64,
    /// Sending partitions to executors (binning them, in-process).
    pub ship_seconds: f64,
    /// Growing the tree (or the ensemble's trees).
    pub train_seconds: f64,
    pub eval_seconds: f64,
    /// From the start of the run to its metrics; data preparation is not in it.
    pub total_seconds: f64,
}

/// An executor that was lost during the run (a crash or a hang; a decommission is not one).
#[derive(Debug, Clone, Serialize)]
pub struct FailureRecord {
    pub executor_id: String,
    pub during: String,
    pub error: String,
    pub partitions_reassigned: usize,
}

/// A change of the run's executors while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipChange {
    /// Registered after the job started and took partitions.
    Join,
    /// Decommissioned: its partitions moved away and its job ended.
    Leave,
    /// Died or went silent: its partitions were re-sent to the others.
    Lost,
}

#[derive(Debug, Clone, Serialize)]
pub struct MembershipEvent {
    pub change: MembershipChange,
    pub executor_id: String,
    /// Seconds since the run started.
    pub at_seconds: f64,
    /// Grower round trips done before the change took effect.
    pub step: usize,
    /// Partitions shipped to the joiner, or away from the leaver or lost executor.
    pub partitions_moved: usize,
    pub bytes_moved: u64,
}

/// What the driver shipped and received, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficStats {
    pub partition_bytes_sent: u64,
    pub control_bytes_sent: u64,
    pub control_bytes_received: u64,
    /// Driver time spent waiting on executors for histograms and merging them.
    pub histogram_wait_seconds: f64,
    pub merge_seconds: f64,
    /// Driver time spent waiting for executors to apply splits.
    pub split_wait_seconds: f64,
    /// Every round trip of the tree growth, in order: what a scaling model is fitted to.
    pub rounds: Vec<Round>,
}

/// One fan-out of the grower to the executors and the answers' merge.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// "histograms" or "apply_splits".
    pub kind: &'static str,
    /// Nodes asked for (histograms) or split (apply_splits).
    pub nodes: usize,
    pub executors: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub wait_seconds: f64,
    pub merge_seconds: f64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Executors the run was asked for (the sweep's count); 0 for an in-process run.
    pub executors: usize,
    pub mode: Mode,
    pub timings: RunTimings,
    pub confusion: ConfusionMatrix,
    pub metrics: ClassificationMetrics,
    pub model: ModelFile,
    pub model_json: Vec<u8>,
    pub model_sha256: String,
    pub growth: Option<GrowthReport>,
    /// Everyone who worked for the run, in the order they joined.
    pub executor_stats: Vec<ExecutorReport>,
    pub failures: Vec<FailureRecord>,
    pub membership: Vec<MembershipEvent>,
    pub retries: u64,
    pub traffic: TrafficStats,
    pub driver_peak_heap_bytes: u64,
    /// The driver process's peak resident set size so far (it includes data preparation).
    pub driver_peak_rss_bytes: u64,
}

//! One training run on a given set of executors, from connecting to metrics, and the sweep
//! over executor counts that `scale` performs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use canopy_executor::partition::decode_partition;
use canopy_proto::v1;
use canopy_tree::grower::LevelDone;
use canopy_tree::{BinnedPartition, ClassificationMetrics, ConfusionMatrix, HistogramLayout, LocalStats, Tree, grow_tree};
use serde::Serialize;
use tracing::info;

use crate::cluster::{self, HeartbeatMonitor, LocalExecutors};
use crate::config::{Mode, ValidExperiment};
use crate::data::Prepared;
use crate::dispatch::{Dispatcher, FailureRecord, RemoteStats, TrafficStats};
use crate::error::{DriverError, Result};
use crate::metrics::DriverMetrics;
use crate::model::{MODEL_FORMAT, MODEL_FORMAT_VERSION, ModelFile, sha256_hex};

/// Where a run's executors come from.
#[derive(Debug, Clone)]
pub enum ExecutorSource {
    /// Start `canopy-executor` processes on 127.0.0.1.
    Spawn { binary: PathBuf, quiet: bool, extra_args: Vec<String> },
    /// Use executors already running; a run with n executors takes the first n addresses.
    Addresses(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub task: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat: Duration,
}

/// One executor's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutorReport {
    pub executor_id: String,
    pub addr: String,
    pub metrics_addr: String,
    pub pid: u32,
    pub alive_at_end: bool,
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
    pub tree_nodes: usize,
    pub tree_leaves: usize,
    pub tree_depth: u32,
}

/// Where a run's time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunTimings {
    /// Starting (if spawned) and connecting to executors.
    pub connect_seconds: f64,
    /// Sending partitions to executors (binning them, in-process).
    pub ship_seconds: f64,
    /// Growing the tree (or the ensemble's trees).
    pub train_seconds: f64,
    pub eval_seconds: f64,
    /// From the start of the run to its metrics; data preparation is not in it.
    pub total_seconds: f64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// 0 for an in-process run.
    pub executors: usize,
    pub mode: Mode,
    pub timings: RunTimings,
    pub confusion: ConfusionMatrix,
    pub metrics: ClassificationMetrics,
    pub model: ModelFile,
    pub model_json: Vec<u8>,
    pub model_sha256: String,
    pub growth: Option<GrowthReport>,
    pub executor_stats: Vec<ExecutorReport>,
    pub failures: Vec<FailureRecord>,
    pub retries: u64,
    pub traffic: TrafficStats,
    pub driver_peak_heap_bytes: u64,
    /// The driver process's peak resident set size so far (it includes data preparation).
    pub driver_peak_rss_bytes: u64,
}

fn model_file(prepared: &Prepared, exp: &ValidExperiment, tree: Option<Tree>, ensemble: Option<Vec<serde_json::Value>>) -> ModelFile {
    ModelFile {
        format: MODEL_FORMAT.into(),
        format_version: MODEL_FORMAT_VERSION,
        mode: exp.mode,
        features: exp.features.clone(),
        feature_names: prepared.feature_names.clone(),
        encoding: prepared.encoding.clone(),
        bin_edges: prepared.edges.clone(),
        params: (*exp.tree).clone(),
        split: exp.split.clone(),
        tree,
        ensemble,
    }
}

/// Progress of the grower: a log line and the split counter, per level.
fn on_level(metrics: &DriverMetrics) -> impl FnMut(&LevelDone) + Send + 'static {
    let nodes_split = metrics.nodes_split.clone();
    move |level: &LevelDone| {
        nodes_split.inc_by(level.splits as u64);
        info!(depth = level.depth, splits = level.splits, open_next = level.open_nodes_next, "tree level done");
    }
}

fn growth_report(stats: &canopy_tree::GrowthStats, tree: &Tree) -> GrowthReport {
    GrowthReport {
        histogram_batches: stats.histogram_batches,
        nodes_built: stats.nodes_built,
        nodes_derived: stats.nodes_derived,
        nodes_split: stats.nodes_split,
        tree_nodes: tree.nodes.len(),
        tree_leaves: tree.num_leaves(),
        tree_depth: tree.depth(),
    }
}

fn finish(mut result: RunResult, started: Instant) -> Result<RunResult> {
    result.model_json = result.model.to_json()?;
    result.model_sha256 = sha256_hex(&result.model_json);
    result.timings.total_seconds = started.elapsed().as_secs_f64();
    result.driver_peak_heap_bytes = canopy_runtime::heap::peak_bytes();
    result.driver_peak_rss_bytes = canopy_runtime::peak_rss_bytes();
    Ok(result)
}

fn empty_result(executors: usize, mode: Mode, model: ModelFile, k: usize) -> RunResult {
    let confusion = ConfusionMatrix::new(k);
    RunResult {
        executors,
        mode,
        timings: RunTimings::default(),
        metrics: ClassificationMetrics::from_confusion(&confusion),
        confusion,
        model,
        model_json: Vec::new(),
        model_sha256: String::new(),
        growth: None,
        executor_stats: Vec::new(),
        failures: Vec::new(),
        retries: 0,
        traffic: TrafficStats::default(),
        driver_peak_heap_bytes: 0,
        driver_peak_rss_bytes: 0,
    }
}

/// Trains and evaluates in this process with the same partitions: the reference model.
pub fn run_in_process(prepared: &Prepared, exp: &ValidExperiment, metrics: &DriverMetrics) -> Result<RunResult> {
    if exp.mode != Mode::Exact {
        return Err(DriverError::Config("--in-process runs the exact mode only".into()));
    }
    canopy_runtime::heap::reset_peak();
    let started = Instant::now();
    let k = prepared.num_classes();
    // The executors' own decoding, so the reference run sees exactly what they see.
    let bin = |batch: &RecordBatch| -> Result<BinnedPartition> {
        decode_partition(std::slice::from_ref(batch), &prepared.edges, k, false)
            .map(|(partition, _)| partition)
            .map_err(|e| DriverError::Internal(format!("in-process partition: {e}")))
    };
    let train = prepared.train.iter().map(bin).collect::<Result<Vec<_>>>()?;
    let test = prepared.test.iter().map(bin).collect::<Result<Vec<_>>>()?;
    let ship_seconds = started.elapsed().as_secs_f64();
    let training = Instant::now();
    let mut source = LocalStats::new(train, HistogramLayout::new(&prepared.edges, k));
    let (tree, stats) = grow_tree(&mut source, &prepared.edges, k, &exp.tree, on_level(metrics))?;
    let train_seconds = training.elapsed().as_secs_f64();
    metrics.phase("train", train_seconds);
    let evaluating = Instant::now();
    let mut confusion = ConfusionMatrix::new(k);
    test.iter().for_each(|p| p.add_confusion(&tree, &mut confusion));
    metrics.phase("evaluate", evaluating.elapsed().as_secs_f64());
    let mut result = empty_result(0, Mode::Exact, model_file(prepared, exp, Some(tree.clone()), None), k);
    result.timings = RunTimings { ship_seconds, train_seconds, eval_seconds: evaluating.elapsed().as_secs_f64(), ..RunTimings::default() };
    result.metrics = ClassificationMetrics::from_confusion(&confusion);
    result.confusion = confusion;
    result.growth = Some(growth_report(&stats, &tree));
    finish(result, started)
}

/// Trains and evaluates on `count` executors from `source`.
pub async fn run_distributed(
    prepared: Arc<Prepared>,
    exp: &ValidExperiment,
    source: &ExecutorSource,
    count: usize,
    timeouts: &Timeouts,
    metrics: &DriverMetrics,
) -> Result<RunResult> {
    canopy_runtime::heap::reset_peak();
    let started = Instant::now();
    let k = prepared.num_classes();
    // Keep spawned processes alive until the run ends; dropping kills them.
    let (_local, addrs) = match source {
        ExecutorSource::Spawn { binary, quiet, extra_args } => {
            let local = LocalExecutors::spawn(count, binary, *quiet, extra_args).await?;
            let addrs = local.addrs.clone();
            (Some(local), addrs)
        }
        ExecutorSource::Addresses(all) => {
            if all.len() < count {
                return Err(DriverError::Config(format!("{count} executors asked for but only {} addresses given", all.len())));
            }
            (None, all[..count].to_vec())
        }
    };
    let executors = futures::future::try_join_all(addrs.iter().map(|a| cluster::connect(a, timeouts.connect))).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    metrics.phase("connect", connect_seconds);
    let _monitor = HeartbeatMonitor::start(executors.clone(), timeouts.heartbeat_interval, timeouts.heartbeat);
    let job_id = format!("job-{}-{}", std::process::id(), started.elapsed().as_nanos());
    metrics.run_started(&job_id, exp.mode.as_str());
    let mut dispatcher = Dispatcher::new(prepared.clone(), job_id.clone(), exp.mode, executors, timeouts.task, metrics.clone());

    let shipping = Instant::now();
    info!(executors = count, partitions = prepared.train.len() + prepared.test.len(), "shipping partitions");
    dispatcher.begin().await?;
    let ship_seconds = shipping.elapsed().as_secs_f64();
    metrics.phase("ship", ship_seconds);

    let training = Instant::now();
    let (mut dispatcher, tree, growth, ensemble) = match exp.mode {
        Mode::Exact => {
            let handle = tokio::runtime::Handle::current();
            let layout = HistogramLayout::new(&prepared.edges, k);
            let (edges, params) = (prepared.edges.clone(), exp.tree.clone());
            let progress = on_level(metrics);
            let (dispatcher, grown) = tokio::task::spawn_blocking(move || {
                let mut remote = RemoteStats { dispatcher, handle, layout };
                let grown = grow_tree(&mut remote, &edges, k, &params, progress);
                (remote.dispatcher, grown)
            })
            .await
            .map_err(|e| DriverError::Internal(format!("training thread: {e}")))?;
            let (tree, stats) = grown?;
            let growth = growth_report(&stats, &tree);
            (dispatcher, Some(tree), Some(growth), None)
        }
        Mode::Ensemble => {
            let request = v1::TrainLocalTreeRequest {
                job_id: job_id.clone(),
                max_depth: exp.tree.max_depth,
                min_instances_per_node: exp.tree.min_instances_per_node,
                min_info_gain: exp.tree.min_info_gain,
                impurity: match exp.tree.impurity {
                    canopy_tree::Impurity::Gini => "gini",
                    canopy_tree::Impurity::Entropy => "entropy",
                }
                .into(),
            };
            let trees = dispatcher.train_local_trees(request).await?;
            (dispatcher, None, None, Some(trees))
        }
    };
    let train_seconds = training.elapsed().as_secs_f64();
    metrics.phase("train", train_seconds);

    let evaluating = Instant::now();
    let (confusion, ensemble_json) = match (&tree, ensemble) {
        (Some(tree), _) => (dispatcher.evaluate(tree).await?, None),
        (None, Some(trees)) => {
            let values = trees
                .iter()
                .map(|t| serde_json::from_slice::<serde_json::Value>(t))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| DriverError::Internal(format!("ensemble tree is not JSON: {e}")))?;
            (dispatcher.evaluate_ensemble(trees).await?, Some(values))
        }
        (None, None) => return Err(DriverError::Internal("no model trained".into())),
    };
    let eval_seconds = evaluating.elapsed().as_secs_f64();
    metrics.phase("evaluate", eval_seconds);

    let ended = dispatcher.end().await?;
    let mut executor_stats: Vec<ExecutorReport> = dispatcher
        .executors()
        .iter()
        .enumerate()
        .map(|(i, e)| ExecutorReport {
            executor_id: e.id.clone(),
            addr: e.addr.clone(),
            metrics_addr: e.metrics_addr.clone(),
            pid: e.pid,
            alive_at_end: dispatcher.is_alive(i),
            tasks: 0,
            busy_seconds: BTreeMap::new(),
            bytes_received: 0,
            bytes_sent: 0,
            peak_heap_bytes: 0,
            peak_rss_bytes: 0,
            rows_held: 0,
        })
        .collect();
    for (i, s) in ended {
        let r = &mut executor_stats[i];
        r.tasks = s.tasks;
        r.busy_seconds = s.busy.into_iter().map(|p| (p.phase, p.seconds)).collect();
        r.bytes_received = s.bytes_received;
        r.bytes_sent = s.bytes_sent;
        r.peak_heap_bytes = s.peak_heap_bytes;
        r.peak_rss_bytes = s.peak_rss_bytes;
        r.rows_held = s.rows_held;
    }
    let mut result = empty_result(count, exp.mode, model_file(&prepared, exp, tree, ensemble_json), k);
    result.timings = RunTimings { connect_seconds, ship_seconds, train_seconds, eval_seconds, total_seconds: 0.0 };
    result.metrics = ClassificationMetrics::from_confusion(&confusion);
    result.confusion = confusion;
    result.growth = growth;
    result.executor_stats = executor_stats;
    result.failures = std::mem::take(&mut dispatcher.failures);
    result.retries = dispatcher.retries;
    result.traffic = dispatcher.traffic.clone();
    finish(result, started)
}

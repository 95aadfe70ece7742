//! One training run on the cluster's executors, from taking them to metrics, and the
//! in-process reference run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_proto::partition::decode;
use canopy_tree::grower::LevelDone;
use canopy_tree::{
    ClassificationMetrics, ConfusionMatrix, Forest, ForestPlan, HistogramLayout, LocalStats, Model, PartitionId, Tree, grow_forest,
};
use tracing::info;

use crate::cluster::Cluster;
use crate::config::{Mode, ValidExperiment};
use crate::data::{Partitions, Prepared};
use crate::dispatch::{Dispatcher, RemoteStats};
use crate::error::{DriverError, Result};
use crate::metrics::DriverMetrics;
use crate::model::{ForestModel, MODEL_FORMAT, ModelFile, format_version_for, sha256_hex};
use crate::results::{GrowthReport, RunResult, RunTimings, TrafficStats};

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub task: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat: Duration,
}

/// What a run trained.
enum Trained {
    Tree(Tree),
    Forest(Forest),
    /// linfa-trees DecisionTrees in their serde form.
    Ensemble(Vec<serde_json::Value>),
}

impl Trained {
    /// What the test partitions are scored with (the ensemble is scored by its own requests).
    fn scorer(&self) -> Result<Model<'_>> {
        match self {
            Trained::Tree(tree) => Ok(Model::Tree(tree)),
            Trained::Forest(forest) => Ok(Model::Forest(forest)),
            Trained::Ensemble(_) => Err(DriverError::Internal("an ensemble is scored by executors' votes".into())),
        }
    }
}

fn model_file(prepared: &Prepared, exp: &ValidExperiment, trained: Trained) -> ModelFile {
    let (mut tree, mut ensemble, mut forest) = (None, None, None);
    match trained {
        Trained::Tree(t) => tree = Some(t),
        Trained::Ensemble(e) => ensemble = Some(e),
        Trained::Forest(trees) => {
            forest = exp.forest.as_ref().map(|(params, plan)| ForestModel {
                params: params.clone(),
                features_per_node: plan.features_per_node,
                trees,
            })
        }
    }
    ModelFile {
        format: MODEL_FORMAT.into(),
        format_version: format_version_for(forest.is_some()),
        mode: exp.mode,
        features: exp.features.clone(),
        feature_names: prepared.feature_names.clone(),
        encoding: prepared.encoding.clone(),
        bin_edges: prepared.edges.clone(),
        params: (*exp.tree).clone(),
        split: exp.split.clone(),
        tree,
        ensemble,
        forest,
    }
}

/// Progress of the grower: a log line, the split counter and the levels bar, per level.
fn on_level(metrics: &DriverMetrics, max_depth: u32) -> impl FnMut(&LevelDone) + Send + 'static {
    let nodes_split = metrics.nodes_split.clone();
    let bar = crate::progress::bar("growing", Some(u64::from(max_depth)), "levels");
    move |level: &LevelDone| {
        nodes_split.inc_by(level.splits as u64);
        bar.set_position(u64::from(level.depth) + 1);
        info!(depth = level.depth, splits = level.splits, open_next = level.open_nodes_next, "tree level done");
    }
}

/// Growth figures; a forest's nodes and leaves are summed over its trees, its depth is the deepest.
fn growth_report(stats: &canopy_tree::GrowthStats, trees: &[Tree]) -> GrowthReport {
    GrowthReport {
        histogram_batches: stats.histogram_batches,
        nodes_built: stats.nodes_built,
        nodes_derived: stats.nodes_derived,
        nodes_split: stats.nodes_split,
        trees: trees.len(),
        tree_nodes: trees.iter().map(|t| t.nodes.len()).sum(),
        tree_leaves: trees.iter().map(Tree::num_leaves).sum(),
        tree_depth: trees.iter().map(Tree::depth).max().unwrap_or(0),
    }
}

/// The plan a run grows: the forest's, or one tree on every row and feature.
fn growth_plan(prepared: &Prepared, exp: &ValidExperiment) -> ForestPlan {
    exp.forest.as_ref().map_or_else(|| ForestPlan::single_tree(prepared.edges.num_features()), |(_, plan)| plan.clone())
}

/// A grown forest as what the run trained: a single tree unless in forest mode.
fn trained(exp: &ValidExperiment, mut trees: Vec<Tree>) -> Result<Trained> {
    match (exp.mode, trees.len()) {
        (Mode::Forest, _) => Ok(Trained::Forest(Forest { trees })),
        (_, 1) => Ok(Trained::Tree(trees.remove(0))),
        (_, n) => Err(DriverError::Internal(format!("grew {n} trees outside forest mode"))),
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
        membership: Vec::new(),
        retries: 0,
        traffic: TrafficStats::default(),
        driver_peak_heap_bytes: 0,
        driver_peak_rss_bytes: 0,
    }
}

/// Trains and evaluates in this process with the same partitions: the reference model.
pub fn run_in_process(prepared: &Prepared, exp: &ValidExperiment, metrics: &DriverMetrics) -> Result<RunResult> {
    if exp.mode == Mode::Ensemble {
        return Err(DriverError::Config("--in-process runs the exact and forest modes only".into()));
    }
    canopy_runtime::heap::reset_peak();
    let started = Instant::now();
    let k = prepared.num_classes();
    // The executors' own decoding and statistics, so the reference run sees what they see.
    let plan = growth_plan(prepared, exp);
    let mut source = LocalStats::for_plan(HistogramLayout::new(&prepared.edges, k), &plan);
    let Partitions::Shipped { train, test } = &prepared.partitions else {
        return Err(DriverError::Internal("an in-process run needs the driver's partitions".into()));
    };
    let parts = (train.iter().enumerate().map(|(i, b)| (PartitionId::train(i as u32), b)))
        .chain(test.iter().enumerate().map(|(i, b)| (PartitionId::test(i as u32), b)));
    for (id, batch) in parts {
        let decoded = decode(std::slice::from_ref(batch), &prepared.edges, k, false)
            .map_err(|e| DriverError::Internal(format!("in-process partition {id}: {e}")))?;
        source.insert(id, decoded.binned)?;
    }
    let ship_seconds = started.elapsed().as_secs_f64();
    let training = Instant::now();
    let (trees, stats) = grow_forest(&mut source, &prepared.edges, k, &exp.tree, &plan, on_level(metrics, exp.tree.max_depth))?;
    let train_seconds = training.elapsed().as_secs_f64();
    metrics.phase("train", train_seconds);
    let growth = growth_report(&stats, &trees);
    let evaluating = Instant::now();
    let test = source.ids_of(canopy_tree::Role::Test);
    let model = trained(exp, trees)?;
    let confusion = source.confusion_of(&test, model.scorer()?)?;
    metrics.phase("evaluate", evaluating.elapsed().as_secs_f64());
    let mut result = empty_result(0, exp.mode, model_file(prepared, exp, model), k);
    result.timings = RunTimings { ship_seconds, train_seconds, eval_seconds: evaluating.elapsed().as_secs_f64(), ..RunTimings::default() };
    result.metrics = ClassificationMetrics::from_confusion(&confusion);
    result.confusion = confusion;
    result.growth = Some(growth);
    finish(result, started)
}

/// Trains and evaluates on the cluster's executors: the first `count` registered (a sweep's
/// run, which then stays at `count`), or with `None` as many as `--min-executors` and
/// `--max-executors` allow, joining and leaving as the registry changes.
pub async fn run_distributed(
    prepared: Arc<Prepared>,
    exp: &ValidExperiment,
    cluster: &Cluster,
    count: Option<usize>,
    timeouts: &Timeouts,
    metrics: &DriverMetrics,
) -> Result<RunResult> {
    canopy_runtime::heap::reset_peak();
    let started = Instant::now();
    let k = prepared.num_classes();
    let cap = cluster.spec.cap(count);
    metrics.set_wanted(cap.min(prepared.partition_count()));
    let initial = cluster.members_for_run(count).await?;
    let started_with = initial.len();
    let connect_seconds = started.elapsed().as_secs_f64();
    metrics.phase("connect", connect_seconds);
    let job_id = format!("job-{}-{}", std::process::id(), started.elapsed().as_nanos());
    metrics.run_started(&job_id, exp.mode.as_str());

    let shipping = Instant::now();
    let verb = if matches!(prepared.partitions, Partitions::Read(_)) { "loading partitions" } else { "shipping partitions" };
    info!(executors = initial.len(), partitions = 2 * prepared.partition_count(), "{verb}");
    let plan = growth_plan(&prepared, exp);
    let bar = crate::progress::bar("shipping", None, "");
    let mut dispatcher = Dispatcher::start(
        prepared.clone(),
        job_id,
        exp.mode,
        exp.forest.as_ref().map(|(_, plan)| plan),
        cluster.registry.clone(),
        initial,
        cap,
        timeouts.task,
        metrics.clone(),
    )
    .await?;
    bar.finish_and_clear();
    let ship_seconds = shipping.elapsed().as_secs_f64();
    metrics.phase("ship", ship_seconds);

    let training = Instant::now();
    let (mut dispatcher, model, growth, ensemble) = match exp.mode {
        Mode::Exact | Mode::Forest => {
            let handle = tokio::runtime::Handle::current();
            let layout = HistogramLayout::new(&prepared.edges, k);
            let (edges, params) = (prepared.edges.clone(), exp.tree.clone());
            let progress = on_level(metrics, exp.tree.max_depth);
            let (dispatcher, grown) = tokio::task::spawn_blocking(move || {
                let mut remote = RemoteStats { dispatcher, handle, layout };
                let grown = grow_forest(&mut remote, &edges, k, &params, &plan, progress);
                (remote.dispatcher, grown)
            })
            .await
            .map_err(|e| DriverError::Internal(format!("training thread: {e}")))?;
            let (trees, stats) = grown?;
            let growth = growth_report(&stats, &trees);
            (dispatcher, Some(trained(exp, trees)?), Some(growth), None)
        }
        Mode::Ensemble => {
            let trees = crate::ensemble::train(&mut dispatcher, &exp.tree).await?;
            (dispatcher, None, None, Some(trees))
        }
    };
    let train_seconds = training.elapsed().as_secs_f64();
    metrics.phase("train", train_seconds);

    let evaluating = Instant::now();
    let (confusion, model) = match (model, ensemble) {
        (Some(model), _) => (dispatcher.evaluate(model.scorer()?).await?, model),
        (None, Some(trees)) => {
            (crate::ensemble::evaluate(&mut dispatcher, &trees).await?, Trained::Ensemble(crate::ensemble::model_values(&trees)?))
        }
        (None, None) => return Err(DriverError::Internal("no model trained".into())),
    };
    let eval_seconds = evaluating.elapsed().as_secs_f64();
    metrics.phase("evaluate", eval_seconds);

    let executor_stats = dispatcher.end().await;
    let mut result = empty_result(count.unwrap_or(started_with), exp.mode, model_file(&prepared, exp, model), k);
    result.timings = RunTimings { connect_seconds, ship_seconds, train_seconds, eval_seconds, total_seconds: 0.0 };
    result.metrics = ClassificationMetrics::from_confusion(&confusion);
    result.confusion = confusion;
    result.growth = growth;
    result.executor_stats = executor_stats;
    result.failures = std::mem::take(&mut dispatcher.failures);
    result.membership = std::mem::take(&mut dispatcher.membership);
    result.retries = dispatcher.retries;
    result.traffic = std::mem::take(&mut dispatcher.traffic);
    finish(result, started)
}

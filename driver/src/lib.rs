//! The Canopy driver: prepares data with DataFusion, trains on executors, reports.
//!
//! - `config`: the experiment (data, features, split, tree parameters), checked.
//! - `data`: loading, features, split and partitions, bin edges.
//! - `registry`, `service`: the executors the driver knows, and the gRPC service they
//!   register with.
//! - `cluster`: spawning and connecting executors, heartbeats, the pool a command uses.
//! - `dispatch`: partitions and their owners, tasks, merging, joins, leaves and losses.
//! - `ensemble`: the ensemble mode's steps.
//! - `run`: one run, distributed or in-process; `results`: what it produced, as plain data.
//! - `metrics`, `model`, `report`, `predict`, `output`: what is published and written.

pub mod cluster;
pub mod config;
pub mod count;
pub mod data;
pub mod dispatch;
pub mod ensemble;
pub mod error;
pub mod http;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plot;
pub mod predict;
pub mod progress;
pub mod registry;
pub mod report;
pub mod results;
pub mod run;
pub mod service;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;

use crate::cluster::{Cluster, ClusterSpec};
use crate::config::{ReadBy, ValidExperiment};
use crate::count::Counters;
use crate::error::{DriverError, Result};
use crate::metrics::Observability;
use crate::report::Report;
use crate::results::RunResult;
use crate::run::Timeouts;

/// What `scale` and `train` run.
pub enum Plan {
    /// Each count in turn, `repeat` times, on the first `count` registered executors.
    Sweep { counts: Vec<usize>, repeat: u32, cluster: ClusterSpec },
    /// One run on as many executors as `--min-executors` / `--max-executors` allow, which
    /// follows executors joining and leaving.
    Elastic { cluster: ClusterSpec },
    /// The in-process reference run.
    InProcess,
}

/// What a plan left: the report, the files written, and the cluster, which keeps serving
/// registrations and heartbeats until it is dropped (executors that leave after the last run
/// are still seen, and the metrics stay true while `/metrics` lingers).
pub struct Finished {
    pub report: Report,
    pub written: Vec<PathBuf>,
    pub cluster: Option<Cluster>,
}

/// Prepares the data once, runs the plan, writes the report under `out` and returns it.
/// Each finished run is published on `obs` (and pushed, if it has a Pushgateway).
pub async fn run_plan(exp: &ValidExperiment, plan: &Plan, timeouts: &Timeouts, out: &Path, obs: &Observability) -> Result<Finished> {
    let metrics = &obs.metrics;
    if let Plan::Sweep { counts, repeat, .. } = plan {
        if counts.is_empty() || counts.contains(&0) {
            return Err(DriverError::Config(format!("executor counts must be at least 1, got {counts:?}")));
        }
        if *repeat == 0 {
            return Err(DriverError::Config("--repeat must be at least 1".into()));
        }
    }
    // The cluster starts first: executors start and register while the data is prepared, and
    // an autoscaler already sees the first run's wanted count.
    let (cluster, first_wanted, runs_to_do): (_, _, Vec<(u32, Option<usize>)>) = match plan {
        Plan::InProcess => (None, 0, Vec::new()),
        Plan::Sweep { counts, repeat, cluster } => {
            let runs = (1..=*repeat).flat_map(|rep| counts.iter().map(move |&n| (rep, Some(n)))).collect();
            (Some(Cluster::start(cluster.clone(), timeouts, metrics).await?), counts[0], runs)
        }
        Plan::Elastic { cluster } => (Some(Cluster::start(cluster.clone(), timeouts, metrics).await?), cluster.cap(None), vec![(1, None)]),
    };
    if cluster.is_some() {
        metrics.set_wanted(first_wanted.min(exp.split.partitions as usize));
    }
    info!(data = %exp.data.display(), "preparing data");
    // In this process the driver holds every partition whoever would have read them. On a
    // cluster whose executors read their own rows, the first run's executors count them too.
    let read_by = if cluster.is_some() { exp.read_by } else { ReadBy::Driver };
    let counters = match (&cluster, read_by, runs_to_do.first()) {
        (Some(cluster), ReadBy::Executors, Some((_, count))) => Some(Counters::new(&cluster.members_for_run(*count).await?, timeouts.task)),
        _ => None,
    };
    let prepared = Arc::new(data::prepare(exp, read_by, counters.as_ref()).await?);
    metrics.phase("prepare", prepared.prepare_seconds);
    info!(
        rows = prepared.rows.read,
        train = prepared.rows.train,
        test = prepared.rows.test,
        seconds = format!("{:.2}", prepared.prepare_seconds),
        "data prepared"
    );
    let mut runs: Vec<(u32, RunResult)> = Vec::new();
    match &cluster {
        None => {
            let result = run::run_in_process(&prepared, exp, metrics)?;
            metrics.run_finished(&result);
            runs.push((1, result));
        }
        Some(cluster) => {
            for (repetition, count) in runs_to_do {
                info!(executors = ?count, repetition, "run starting");
                runs.push((repetition, distributed_run(&prepared, exp, cluster, count, timeouts, obs).await?));
            }
            metrics.set_wanted(cluster.spec.min_executors);
        }
    }
    if let Plan::Sweep { counts, .. } = plan {
        // Sweep order for the report: by count, then repetition.
        runs.sort_by_key(|(rep, r)| (counts.iter().position(|&c| c == r.executors), *rep));
    }
    let report = Report::new(&prepared, &exp.tree, &exp.split, exp.mode, &runs);
    let written = report::write_all(out, &report, &runs)?;
    Ok(Finished { report, written, cluster })
}

/// One distributed run, published on `obs` when it finishes.
async fn distributed_run(
    prepared: &Arc<data::Prepared>,
    exp: &ValidExperiment,
    cluster: &Cluster,
    count: Option<usize>,
    timeouts: &Timeouts,
    obs: &Observability,
) -> Result<RunResult> {
    let metrics = &obs.metrics;
    let result = match run::run_distributed(prepared.clone(), exp, cluster, count, timeouts, metrics).await {
        Ok(result) => result,
        Err(e) => {
            metrics.run_failed(exp.mode.as_str());
            return Err(e);
        }
    };
    metrics.run_finished(&result);
    obs.push().await;
    info!(
        executors = result.executors,
        train_seconds = format!("{:.3}", result.timings.train_seconds),
        accuracy = format!("{:.4}", result.metrics.accuracy),
        "run done"
    );
    Ok(result)
}

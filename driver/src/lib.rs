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
pub mod registry;
pub mod report;
pub mod results;
pub mod run;
pub mod service;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;

use crate::cluster::{Cluster, ClusterSpec};
use crate::config::ValidExperiment;
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
    info!(data = %exp.data.display(), "preparing data");
    let prepared = Arc::new(data::prepare(exp).await?);
    metrics.phase("prepare", prepared.prepare_seconds);
    info!(
        rows = prepared.rows.read,
        train = prepared.rows.train,
        test = prepared.rows.test,
        seconds = format!("{:.2}", prepared.prepare_seconds),
        "data prepared"
    );
    let mut runs: Vec<(u32, RunResult)> = Vec::new();
    let mut started = None;
    match plan {
        Plan::InProcess => {
            let result = run::run_in_process(&prepared, exp, metrics)?;
            metrics.run_finished(&result);
            runs.push((1, result));
        }
        Plan::Sweep { counts, repeat, cluster } => {
            let cluster = Cluster::start(cluster.clone(), timeouts, metrics).await?;
            for repetition in 1..=*repeat {
                for &count in counts {
                    info!(executors = count, repetition, "run starting");
                    let result = distributed_run(&prepared, exp, &cluster, Some(count), timeouts, obs).await?;
                    runs.push((repetition, result));
                }
            }
            metrics.set_wanted(cluster.spec.min_executors);
            started = Some(cluster);
            // Sweep order for the report: by count, then repetition.
            runs.sort_by_key(|(rep, r)| (counts.iter().position(|&c| c == r.executors), *rep));
        }
        Plan::Elastic { cluster } => {
            let cluster = Cluster::start(cluster.clone(), timeouts, metrics).await?;
            let result = distributed_run(&prepared, exp, &cluster, None, timeouts, obs).await?;
            metrics.set_wanted(cluster.spec.min_executors);
            started = Some(cluster);
            runs.push((1, result));
        }
    }
    let report = Report::new(&prepared, &exp.tree, &exp.split, exp.mode, &runs);
    let written = report::write_all(out, &report, &runs)?;
    Ok(Finished { report, written, cluster: started })
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

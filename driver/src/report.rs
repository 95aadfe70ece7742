//! The sweep's report: `report.json` (everything), `report.csv` (one row per run),
//! `scaling.svg` (time and speedup against executor count) and the printed table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use canopy_tree::{ClassificationMetrics, TreeParams};
use serde::Serialize;

use crate::config::{Mode, SplitSpec};
use crate::data::{Prepared, RowCounts};
use crate::error::{DriverError, Result};
use crate::output::Staged;
use crate::plot::{self, RunPoint};
use crate::results::{ExecutorReport, FailureRecord, GrowthReport, MembershipEvent, RunResult, RunTimings, TrafficStats};

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub executors: usize,
    pub repetition: u32,
    pub mode: Mode,
    #[serde(flatten)]
    pub timings: RunTimings,
    pub speedup: f64,
    pub efficiency: f64,
    #[serde(flatten)]
    pub metrics: ClassificationMetrics,
    /// Rows: actual class; columns: predicted class.
    pub confusion_matrix: Vec<Vec<u64>>,
    pub model_file: String,
    pub model_sha256: String,
    pub driver_peak_heap_bytes: u64,
    pub driver_peak_rss_bytes: u64,
    pub growth: Option<GrowthReport>,
    pub traffic: TrafficStats,
    pub retries: u64,
    pub failures: Vec<FailureRecord>,
    /// Executors that joined, left or were lost while the run ran, in order.
    pub membership: Vec<MembershipEvent>,
    /// Partitions moved after the initial shipment (joins, leaves, losses), and their bytes.
    pub partitions_moved: usize,
    pub bytes_moved: u64,
    pub executor_stats: Vec<ExecutorReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub canopy_version: String,
    pub data: String,
    pub rows: RowCounts,
    pub prepare_seconds: f64,
    pub feature_names: Vec<String>,
    pub class_names: Vec<String>,
    pub mode: Mode,
    pub params: TreeParams,
    pub split: SplitSpec,
    /// Exact mode: whether every run produced the same model bytes (it must).
    pub models_identical: bool,
    pub note: String,
    pub runs: Vec<RunReport>,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// File name of a run's model inside the output directory.
pub fn model_file_name(executors: usize, repetition: u32) -> String {
    if executors == 0 {
        format!("models/model-in-process-r{repetition}.json")
    } else {
        format!("models/model-e{executors}-r{repetition}.json")
    }
}

impl Report {
    /// `runs` holds (repetition, result) in sweep order; the first executor count is the
    /// speedup baseline (its median train time).
    pub fn new(prepared: &Prepared, params: &TreeParams, split: &SplitSpec, mode: Mode, runs: &[(u32, RunResult)]) -> Report {
        let baseline_count = runs.first().map_or(1, |(_, r)| r.executors);
        let baseline = median(runs.iter().filter(|(_, r)| r.executors == baseline_count).map(|(_, r)| r.timings.train_seconds).collect());
        let first_sha = runs.first().map(|(_, r)| r.model_sha256.clone()).unwrap_or_default();
        let models_identical = runs.iter().all(|(_, r)| r.model_sha256 == first_sha);
        let note = match mode {
            Mode::Exact => "exact mode: the model must be byte-identical for every executor count (see models_identical)".into(),
            Mode::Forest => "forest mode: the forest must be byte-identical for every executor count (see models_identical)".into(),
            Mode::Ensemble => {
                "ensemble mode: one linfa tree per executor shard, majority vote; accuracy changes with the executor count by design".into()
            }
        };
        let runs = runs
            .iter()
            .map(|(repetition, r)| {
                let speedup = baseline / r.timings.train_seconds;
                let scale = r.executors.max(1) as f64 / baseline_count.max(1) as f64;
                RunReport {
                    executors: r.executors,
                    repetition: *repetition,
                    mode: r.mode,
                    timings: r.timings.clone(),
                    speedup,
                    efficiency: speedup / scale,
                    metrics: r.metrics.clone(),
                    confusion_matrix: r.confusion.rows(),
                    model_file: model_file_name(r.executors, *repetition),
                    model_sha256: r.model_sha256.clone(),
                    driver_peak_heap_bytes: r.driver_peak_heap_bytes,
                    driver_peak_rss_bytes: r.driver_peak_rss_bytes,
                    growth: r.growth.clone(),
                    traffic: r.traffic.clone(),
                    retries: r.retries,
                    failures: r.failures.clone(),
                    membership: r.membership.clone(),
                    partitions_moved: r.membership.iter().map(|e| e.partitions_moved).sum(),
                    bytes_moved: r.membership.iter().map(|e| e.bytes_moved).sum(),
                    executor_stats: r.executor_stats.clone(),
                }
            })
            .collect();
        Report {
            canopy_version: env!("CARGO_PKG_VERSION").into(),
            data: prepared.source.display().to_string(),
            rows: prepared.rows.clone(),
            prepare_seconds: prepared.prepare_seconds,
            feature_names: prepared.feature_names.clone(),
            class_names: prepared.encoding.class_names.clone(),
            mode,
            params: params.clone(),
            split: split.clone(),
            models_identical,
            note,
            runs,
        }
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| DriverError::Internal(e.to_string()))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "executors,repetition,mode,train_seconds,total_seconds,ship_seconds,eval_seconds,speedup,efficiency,accuracy,\
             weighted_precision,weighted_recall,weighted_f1,model_sha256,driver_peak_heap_bytes,retries,failures,\
             executor_tasks,executor_busy_seconds,executor_peak_heap_bytes\n",
        );
        for r in &self.runs {
            let join = |f: &dyn Fn(&ExecutorReport) -> String| r.executor_stats.iter().map(f).collect::<Vec<_>>().join(";");
            let _ = writeln!(
                out,
                "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.4},{:.4},{:.6},{:.6},{:.6},{:.6},{},{},{},{},{},{},{}",
                r.executors,
                r.repetition,
                r.mode.as_str(),
                r.timings.train_seconds,
                r.timings.total_seconds,
                r.timings.ship_seconds,
                r.timings.eval_seconds,
                r.speedup,
                r.efficiency,
                r.metrics.accuracy,
                r.metrics.weighted_precision,
                r.metrics.weighted_recall,
                r.metrics.weighted_f1,
                r.model_sha256,
                r.driver_peak_heap_bytes,
                r.retries,
                r.failures.len(),
                join(&|e| e.tasks.to_string()),
                join(&|e| format!("{:.3}", e.busy_seconds_total())),
                join(&|e| e.peak_heap_bytes.to_string()),
            );
        }
        out
    }

    /// The table printed at the end of a sweep.
    pub fn table(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>9} {:>3} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>6}  {:<16} {:<22} {:<22} {:>9}",
            "executors",
            "rep",
            "train_s",
            "total_s",
            "accuracy",
            "w_precis",
            "w_recall",
            "w_f1",
            "speedup",
            "effic",
            "tasks/executor",
            "busy_s/executor",
            "peak_heap_MiB/executor",
            "driver_MiB"
        );
        for r in &self.runs {
            let list = |f: &dyn Fn(&ExecutorReport) -> String| {
                r.executor_stats.iter().map(|e| if e.alive_at_end || e.left { f(e) } else { "lost".into() }).collect::<Vec<_>>().join("/")
            };
            let _ = writeln!(
                out,
                "{:>9} {:>3} {:>8.3} {:>8.3} {:>8.4} {:>9.4} {:>9.4} {:>9.4} {:>7.2} {:>6.2}  {:<16} {:<22} {:<22} {:>9.1}",
                if r.executors == 0 { "in-proc".to_string() } else { r.executors.to_string() },
                r.repetition,
                r.timings.train_seconds,
                r.timings.total_seconds,
                r.metrics.accuracy,
                r.metrics.weighted_precision,
                r.metrics.weighted_recall,
                r.metrics.weighted_f1,
                r.speedup,
                r.efficiency,
                list(&|e| e.tasks.to_string()),
                list(&|e| format!("{:.2}", e.busy_seconds_total())),
                list(&|e| format!("{:.1}", mib(e.peak_heap_bytes))),
                mib(r.driver_peak_heap_bytes),
            );
        }
        for r in &self.runs {
            for e in &r.membership {
                let _ = writeln!(
                    out,
                    "run with {} executors (rep {}): {} {} at step {} ({:.2} s); {} partitions, {} bytes moved",
                    r.executors,
                    r.repetition,
                    e.executor_id,
                    match e.change {
                        crate::results::MembershipChange::Join => "joined",
                        crate::results::MembershipChange::Leave => "left",
                        crate::results::MembershipChange::Lost => "was lost",
                    },
                    e.step,
                    e.at_seconds,
                    e.partitions_moved,
                    e.bytes_moved
                );
            }
            for f in &r.failures {
                let _ = writeln!(
                    out,
                    "run with {} executors (rep {}): lost {} during {} ({}); {} partitions reassigned, {} retries",
                    r.executors, r.repetition, f.executor_id, f.during, f.error, f.partitions_reassigned, r.retries
                );
            }
        }
        let _ = writeln!(
            out,
            "rows: {} read, {} dropped (null label), {} train, {} test; data prepared in {:.2} s; models identical: {}",
            self.rows.read, self.rows.dropped_null_label, self.rows.train, self.rows.test, self.prepare_seconds, self.models_identical
        );
        let _ = write!(out, "{}", self.note);
        out
    }

    /// Medians per executor count, for the plot.
    pub fn points(&self) -> Vec<RunPoint> {
        let mut by_count: BTreeMap<usize, Vec<&RunReport>> = BTreeMap::new();
        self.runs.iter().for_each(|r| by_count.entry(r.executors).or_default().push(r));
        by_count
            .into_iter()
            .map(|(executors, rs)| {
                let m = |f: fn(&RunReport) -> f64| median(rs.iter().map(|r| f(r)).collect());
                RunPoint {
                    executors,
                    train_seconds: m(|r| r.timings.train_seconds),
                    total_seconds: m(|r| r.timings.total_seconds),
                    speedup: m(|r| r.speedup),
                    accuracy: m(|r| r.metrics.accuracy),
                    weighted_f1: m(|r| r.metrics.weighted_f1),
                }
            })
            .collect()
    }
}

/// Writes the report, its CSV and plot, and the run models under `dir`, all or nothing: a
/// failure leaves `dir` as it was.
pub fn write_all(dir: &Path, report: &Report, runs: &[(u32, RunResult)]) -> Result<Vec<PathBuf>> {
    let files: Vec<(PathBuf, Vec<u8>)> = std::iter::once((dir.join("report.json"), report.to_json()?))
        .chain(std::iter::once((dir.join("report.csv"), report.to_csv().into_bytes())))
        .chain(std::iter::once((dir.join("scaling.svg"), plot::runs_svg(&report.points(), "report")?.into_bytes())))
        .chain(runs.iter().map(|(rep, r)| (dir.join(model_file_name(r.executors, *rep)), r.model_json.clone())))
        .collect();
    let mut staged = Staged::new();
    for (path, bytes) in &files {
        staged.add_bytes(path, bytes)?;
    }
    staged.commit()?;
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

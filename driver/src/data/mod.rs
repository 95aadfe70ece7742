//! Data preparation, done once per sweep on the driver with the shared pipeline
//! (`canopy_pipeline`): the file read in units (`scan`), each unit's features (`features`,
//! derived columns by DataFusion), exact counts for the encoding and the bin edges (`counts`),
//! and the seeded split into partitions (`split`). The partitions are either encoded here and
//! shipped, or read by the executors themselves (`--read-by executors`).

pub mod generate;
pub mod import;

pub use canopy_pipeline::{counts, features, load, scan, split};

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::RecordBatch;
use canopy_pipeline::partitions::{CountPass, FeatureEncoding, RowPartitioning, assemble};
use canopy_proto::MAX_REQUEST_BYTES;
use canopy_proto::partition::encode;
use canopy_proto::v1;
use canopy_tree::{BinEdges, PartitionId};
use serde::Serialize;

use crate::config::{Mode, ReadBy, ValidExperiment};
use crate::count::Counters;
use crate::error::{DriverError, Result};
use crate::progress;
use features::{Encoding, Pipeline, UnitFeatures, Values};
use scan::Source;
use split::{Role, RowRanges, assign};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowCounts {
    pub read: u64,
    pub dropped_null_label: u64,
    pub train: u64,
    pub test: u64,
}

/// Everything a run needs, computed once per sweep.
pub struct Prepared {
    pub source: PathBuf,
    pub feature_names: Vec<String>,
    pub encoding: Encoding,
    pub edges: BinEdges,
    pub partitions: Partitions,
    pub rows: RowCounts,
    pub prepare_seconds: f64,
}

/// Where the executors' partitions come from.
pub enum Partitions {
    /// Encoded here: one batch per partition in the partition format (`canopy_proto::partition`):
    /// UInt8 bins in exact mode, Float64 values in ensemble mode, and "label" as UInt8. Shipped
    /// over Arrow Flight.
    Shipped { train: Vec<RecordBatch>, test: Vec<RecordBatch> },
    /// Read by the executors from the file: partition i holds the file's i-th range of rows
    /// (`canopy_pipeline::split::RowRanges`). The driver keeps each partition's row counts.
    Read(ReadPlan),
}

pub struct ReadPlan {
    pub layout: RowPartitioning,
    /// The file's path (absolute) or URL, as executors open it.
    pub location: String,
    /// The file's version as read here; executors must find the same.
    pub version: String,
    /// The features and their encoding, as executors receive them (`FeatureEncoding`, JSON).
    pub features_json: Vec<u8>,
    pub train_rows: Vec<u64>,
    pub test_rows: Vec<u64>,
}

impl Prepared {
    pub fn num_classes(&self) -> usize {
        self.encoding.class_names.len()
    }

    /// Partitions of each role.
    pub fn partition_count(&self) -> usize {
        match &self.partitions {
            Partitions::Shipped { train, .. } => train.len(),
            Partitions::Read(plan) => plan.train_rows.len(),
        }
    }

    /// Rows of partition `p`.
    pub fn rows_of(&self, p: PartitionId) -> u64 {
        let index = p.index as usize;
        match (&self.partitions, p.role) {
            (Partitions::Shipped { train, .. }, canopy_tree::Role::Train) => train.get(index).map_or(0, |b| b.num_rows() as u64),
            (Partitions::Shipped { test, .. }, canopy_tree::Role::Test) => test.get(index).map_or(0, |b| b.num_rows() as u64),
            (Partitions::Read(plan), canopy_tree::Role::Train) => plan.train_rows.get(index).copied().unwrap_or(0),
            (Partitions::Read(plan), canopy_tree::Role::Test) => plan.test_rows.get(index).copied().unwrap_or(0),
        }
    }
}

/// One pass over `source`: every unit featurized by `pipeline`, then given to `work`, on every
/// core; results in file order. A progress bar named `phase` counts the rows.
pub async fn featurized<T: Send>(
    source: &Source,
    pipeline: &Pipeline,
    phase: &'static str,
    work: impl Fn(UnitFeatures) -> canopy_pipeline::Result<T> + Sync,
) -> Result<Vec<T>> {
    let bar = progress::bar(phase, source.rows(), "rows");
    let done = source
        .for_each(pipeline.columns(), |unit| {
            let features = pipeline.featurize(unit)?;
            bar.inc(features.rows_read);
            work(features)
        })
        .await?;
    bar.finish_and_clear();
    Ok(done)
}

/// Prepares the experiment's data in two passes over the file, each on every core: exact counts
/// (the encoding and the bin edges), then encoding, binning and routing each row to its
/// partition. Only counts and encoded rows are held, never the file's text. With `read_by`
/// executors, the executors encode their own partitions, and count them too when `counters`
/// is given; otherwise the counting pass runs here and also counts each partition's rows.
pub async fn prepare(exp: &ValidExperiment, read_by: ReadBy, counters: Option<&Counters>) -> Result<Prepared> {
    let started = Instant::now();
    let step = |name: &str| tracing::debug!(step = name, seconds = started.elapsed().as_secs_f64(), "prepare");
    let path = exp.data.as_path();
    let spec = &exp.features;
    let source = Source::open(path).await?;
    let pipeline = Pipeline::new(path, &source.schema, spec, true)?;
    let split = &exp.split;
    let role = |row: u64| assign(split.seed, row, split.test_fraction, split.partitions).0;

    let parts = split.partitions as usize;
    // Executors read contiguous ranges of rows (`split::RowRanges`): their rows per partition.
    let rows = source.rows().unwrap_or(0);
    let layout = RowPartitioning { rows, partitions: split.partitions, seed: split.seed, test_fraction: split.test_fraction };
    // A relative path means the driver's working directory, which an executor need not share.
    let location =
        if path.to_string_lossy().contains("://") { path.to_path_buf() } else { std::path::absolute(path).unwrap_or(path.to_path_buf()) };
    let location = location.to_string_lossy().into_owned();
    let (counts, per_range) = match (read_by, counters) {
        (ReadBy::Executors, Some(counters)) => {
            let features_json = serde_json::to_vec(&FeatureEncoding { features: spec.clone(), encoding: None })
                .map_err(|e| DriverError::Internal(format!("cannot encode the features: {e}")))?;
            let source = v1::DataSource {
                location: location.clone(),
                version: source.version(),
                rows,
                partitions: split.partitions,
                split_seed: split.seed,
                test_fraction: split.test_fraction,
                features_json,
            };
            counters.count(source, spec).await?
        }
        _ => {
            let ranges = RowRanges::new(split.partitions, rows);
            // Executors reading their own rows need each range's rows; the driver's partitions don't.
            let pass = CountPass::new(if read_by == ReadBy::Executors { parts } else { 0 });
            featurized(&source, &pipeline, "counting", |features| pass.add(&features, role, |row| ranges.of(row) as usize)).await?;
            pass.finish()?
        }
    };
    step("counted");
    if counts.rows_read == 0 {
        return Err(DriverError::EmptyDataset { path: path.to_path_buf(), stage: "(the file has no data rows)" });
    }
    if counts.labelled == 0 {
        return Err(DriverError::AllLabelsNull { path: path.to_path_buf(), column: spec.label.column.clone() });
    }
    let encoding = counts.encoding(spec, path)?;
    if encoding.class_names.len() < 2 {
        return Err(DriverError::Config(format!(
            "label '{}' has {} class(es) in '{}'; a classifier needs at least 2",
            spec.label.column,
            encoding.class_names.len(),
            path.display()
        )));
    }
    if counts.train == 0 || counts.test == 0 {
        return Err(DriverError::EmptyDataset { path: path.to_path_buf(), stage: "in the train or test split" });
    }
    let edges = counts.edges(&encoding, spec, exp.tree.max_bins)?;
    step("edges");
    let row_counts = RowCounts {
        read: counts.rows_read,
        dropped_null_label: counts.rows_read - counts.labelled,
        train: counts.train,
        test: counts.test,
    };
    let feature_names = spec.feature_names();
    if read_by == ReadBy::Executors {
        let features = FeatureEncoding { features: spec.clone(), encoding: Some(encoding.clone()) };
        let features_json = serde_json::to_vec(&features).map_err(|e| DriverError::Internal(format!("cannot encode the features: {e}")))?;
        // Category indexes grow with the data; executors take requests of at most
        // MAX_REQUEST_BYTES, and BeginJob carries these.
        if features_json.len() > MAX_REQUEST_BYTES / 2 {
            return Err(DriverError::Config(format!(
                "the category indexes of '{}' take {} bytes; executors take requests of at most {MAX_REQUEST_BYTES} bytes, so \
                 they cannot read their own rows of it (use --read-by driver)",
                path.display(),
                features_json.len()
            )));
        }
        let plan = ReadPlan {
            layout,
            location,
            version: source.version(),
            features_json,
            train_rows: per_range.iter().map(|r| r[0]).collect(),
            test_rows: per_range.iter().map(|r| r[1]).collect(),
        };
        return Ok(Prepared {
            source: exp.data.clone(),
            feature_names,
            encoding,
            edges,
            partitions: Partitions::Read(plan),
            rows: row_counts,
            prepare_seconds: started.elapsed().as_secs_f64(),
        });
    }

    // Exact and forest modes ship bins (one byte a value) and executors never see raw values;
    // the ensemble's linfa trees need the raw values.
    let values = match exp.mode {
        Mode::Exact | Mode::Forest => Values::Binned(&edges),
        Mode::Ensemble => Values::Raw,
    };
    // Destination d < partitions is training partition d; the rest are test partitions.
    let destination = |row: u64| match assign(split.seed, row, split.test_fraction, split.partitions) {
        (Role::Train, p) => p as usize,
        (Role::Test, p) => parts + p as usize,
    };
    // A forest's training rows carry their numbers in the file, which seed their bootstrap
    // weights wherever they are held.
    let numbered = exp.mode == Mode::Forest;
    let units = featurized(&source, &pipeline, "encoding", |features| {
        encoding.encode(&pipeline, &features, values, 2 * parts, destination, numbered)
    })
    .await?;
    step("encoded");
    let partitions = assemble(units, 2 * parts, values, feature_names.len(), numbered);
    let with_numbers = |d: usize| numbered && d < parts;
    let mut batches = partitions
        .into_iter()
        .enumerate()
        .map(|(d, chunk)| {
            let numbers = with_numbers(d).then_some(chunk.row_numbers);
            encode(&feature_names, chunk.columns, chunk.labels, numbers).map_err(|e| DriverError::Internal(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let test = batches.split_off(parts);
    step("partitioned");
    Ok(Prepared {
        source: exp.data.clone(),
        feature_names,
        encoding,
        edges,
        partitions: Partitions::Shipped { train: batches, test },
        rows: row_counts,
        prepare_seconds: started.elapsed().as_secs_f64(),
    })
}

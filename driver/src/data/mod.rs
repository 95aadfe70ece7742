//! Data preparation, done once on the driver: the file read in units (`scan`), each unit's
//! features (`features`, derived columns by DataFusion), exact counts for the encoding and the
//! bin edges (`counts`), and the seeded split into partitions (`split`).

pub mod counts;
pub mod features;
pub mod generate;
pub mod import;
pub mod load;
pub mod scan;
pub mod split;

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::RecordBatch;
use canopy_proto::partition::encode;
use canopy_tree::BinEdges;
use serde::Serialize;

use crate::config::{Mode, ValidExperiment};
use crate::error::{DriverError, Result};
use crate::progress;
use counts::Counts;
use features::{Chunk, Encoding, Pipeline, UnitFeatures, Values};
use scan::Source;
use split::{Role, assign};

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
    /// One batch per partition in the partition format (`canopy_proto::partition`): UInt8 bins
    /// in exact mode, Float64 values in ensemble mode, and "label" as UInt8.
    pub train: Vec<RecordBatch>,
    pub test: Vec<RecordBatch>,
    pub rows: RowCounts,
    pub prepare_seconds: f64,
}

impl Prepared {
    pub fn num_classes(&self) -> usize {
        self.encoding.class_names.len()
    }
}

/// One pass over `source`: every unit featurized by `pipeline`, then given to `work`, on every
/// core; results in file order. A progress bar named `phase` counts the rows.
pub async fn featurized<T: Send>(
    source: &Source,
    pipeline: &Pipeline,
    phase: &'static str,
    work: impl Fn(UnitFeatures) -> Result<T> + Sync,
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
/// partition. Only counts and encoded rows are held, never the file's text.
pub async fn prepare(exp: &ValidExperiment) -> Result<Prepared> {
    let started = Instant::now();
    let step = |name: &str| tracing::debug!(step = name, seconds = started.elapsed().as_secs_f64(), "prepare");
    let path = exp.data.as_path();
    let spec = &exp.features;
    let source = Source::open(path).await?;
    let pipeline = Pipeline::new(path, &source.schema, spec, true)?;
    let split = &exp.split;
    let role = |row: u64| assign(split.seed, row, split.test_fraction, split.partitions).0;

    let counts = featurized(&source, &pipeline, "counting", |features| Ok(Counts::of(&features, role))).await?;
    let counts = counts.into_iter().fold(Counts::default(), Counts::merge);
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

    // Exact and forest modes ship bins (one byte a value) and executors never see raw values;
    // the ensemble's linfa trees need the raw values.
    let values = match exp.mode {
        Mode::Exact | Mode::Forest => Values::Binned(&edges),
        Mode::Ensemble => Values::Raw,
    };
    // Destination d < partitions is training partition d; the rest are test partitions.
    let parts = split.partitions as usize;
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
    let feature_names = spec.feature_names();
    // Each partition sized once, then filled unit by unit, each unit freed as it goes.
    let mut partitions: Vec<Chunk> = (0..2 * parts)
        .map(|d| Chunk::with_capacity(values, feature_names.len(), units.iter().map(|u| u[d].rows).sum(), numbered))
        .collect();
    for unit in units {
        partitions.iter_mut().zip(unit).for_each(|(partition, chunk)| partition.append(chunk));
    }
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
        train: batches,
        test,
        rows: RowCounts {
            read: counts.rows_read,
            dropped_null_label: counts.rows_read - counts.labelled,
            train: counts.train,
            test: counts.test,
        },
        prepare_seconds: started.elapsed().as_secs_f64(),
    })
}

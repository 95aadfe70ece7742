//! Data preparation: load and featurize (`features`, with DataFusion), split and partition
//! (`split`), and the global bin edges, done once on the driver.

pub mod features;
pub mod generate;
pub mod import;
pub mod load;
pub mod split;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::PathBuf;
use std::time::Instant;

use arrow::array::RecordBatch;
use canopy_proto::partition::{FeatureColumns, encode};
use canopy_tree::{BinEdges, FeatureBins};
use serde::Serialize;

use crate::config::{Mode, ValidExperiment};
use crate::error::{DriverError, Result};
use features::{Encoding, Featurized};
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

pub async fn prepare(exp: &ValidExperiment) -> Result<Prepared> {
    let started = Instant::now();
    let step = |name: &str| tracing::debug!(step = name, seconds = started.elapsed().as_secs_f64(), "prepare");
    let mut loaded = features::load(&exp.data, &exp.features, true).await?;
    step("loaded");
    if loaded.rows() == 0 {
        return Err(DriverError::EmptyDataset { path: exp.data.clone(), stage: "after dropping rows with a null label" });
    }
    let encoding = Encoding::fit(&loaded, &exp.features).await?;
    if encoding.class_names.len() < 2 {
        return Err(DriverError::Config(format!(
            "label '{}' has {} class(es) in '{}'; a classifier needs at least 2",
            exp.features.label.column,
            encoding.class_names.len(),
            exp.data.display()
        )));
    }
    step("encoding fitted");
    let Featurized { columns, labels } = encoding.apply(&loaded, &exp.features)?;
    step("encoded");
    let labels = labels.ok_or_else(|| DriverError::Internal("labels missing after load".into()))?;
    let (train_rows, test_rows) = split_rows(&loaded.row_numbers, exp)?;
    let count = |rows: &[Vec<u32>]| rows.iter().map(|r| r.len() as u64).sum::<u64>();
    let rows = RowCounts {
        read: loaded.rows_read,
        dropped_null_label: loaded.rows_read - loaded.rows() as u64,
        train: count(&train_rows),
        test: count(&test_rows),
    };
    // A forest's training rows carry their numbers in the file, which seed their bootstrap
    // weights wherever they are held.
    let row_numbers = (exp.mode == Mode::Forest).then(|| std::mem::take(&mut loaded.row_numbers));
    // The text columns are not needed any more; free them before the binned copy is made.
    drop(loaded);
    if rows.train == 0 || rows.test == 0 {
        return Err(DriverError::EmptyDataset { path: exp.data.clone(), stage: "in the train or test split" });
    }
    let feature_names = exp.features.feature_names();
    step("split");
    let edges = bin_edges(&feature_names, &columns, &train_rows, exp.tree.max_bins)?;
    step("edges");
    // Exact and forest modes ship bins (one byte a value) and executors never see raw values;
    // the ensemble's linfa trees need the raw values.
    let columns = match exp.mode {
        Mode::Exact | Mode::Forest => FeatureColumns::Binned(bin_columns(columns, &edges)),
        Mode::Ensemble => FeatureColumns::Raw(columns),
    };
    let batch = |rows: &Vec<u32>, row_numbers: Option<&[u64]>| -> Result<RecordBatch> {
        encode(&feature_names, &columns, &labels, row_numbers, rows).map_err(|e| DriverError::Internal(e.to_string()))
    };
    step("binned");
    let train = train_rows.iter().map(|rows| batch(rows, row_numbers.as_deref())).collect::<Result<Vec<_>>>()?;
    let test = test_rows.iter().map(|rows| batch(rows, None)).collect::<Result<Vec<_>>>()?;
    step("partitioned");
    Ok(Prepared {
        source: exp.data.clone(),
        feature_names,
        encoding,
        edges,
        train,
        test,
        rows,
        prepare_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Indexes (into the loaded rows) of the rows of each partition.
type PartitionRows = Vec<Vec<u32>>;

/// Train/test and partition of every loaded row (by its file row number), as row indexes.
fn split_rows(row_numbers: &[u64], exp: &ValidExperiment) -> Result<(PartitionRows, PartitionRows)> {
    let parts = exp.split.partitions as usize;
    let mut train_rows: Vec<Vec<u32>> = vec![Vec::new(); parts];
    let mut test_rows: Vec<Vec<u32>> = vec![Vec::new(); parts];
    for (i, &row) in row_numbers.iter().enumerate() {
        let (role, p) = assign(exp.split.seed, row, exp.split.test_fraction, exp.split.partitions);
        let index = u32::try_from(i).map_err(|_| DriverError::Config("more than 2^32 rows".into()))?;
        match role {
            Role::Train => train_rows[p as usize].push(index),
            Role::Test => test_rows[p as usize].push(index),
        }
    }
    Ok((train_rows, test_rows))
}

/// Bins every column with the global edges, freeing each raw column as it goes; the features
/// are split between threads.
fn bin_columns(columns: Vec<Vec<f64>>, edges: &BinEdges) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(columns.len().max(1));
    let mut work: Vec<(usize, Vec<f64>)> = columns.into_iter().enumerate().collect();
    let mut binned: Vec<Vec<u8>> = vec![Vec::new(); work.len()];
    let per_thread = work.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = std::iter::from_fn(|| {
            if work.is_empty() {
                return None;
            }
            let chunk: Vec<(usize, Vec<f64>)> = work.drain(..per_thread.min(work.len())).collect();
            Some(scope.spawn(move || {
                chunk
                    .into_iter()
                    .map(|(f, column)| (f, column.iter().map(|&v| edges.features[f].bin_of(v)).collect::<Vec<u8>>()))
                    .collect::<Vec<_>>()
            }))
        })
        .collect();
        for handle in handles {
            // A panic in binning is a bug; re-raise it here rather than lose a column.
            for (f, column) in handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                binned[f] = column;
            }
        }
    });
    binned
}

/// Exact global value counts of every feature over the training rows, then quantile edges;
/// features are counted in parallel.
fn bin_edges(names: &[String], columns: &[Vec<f64>], train_rows: &[Vec<u32>], max_bins: u32) -> Result<BinEdges> {
    let count = |column: &Vec<f64>| -> Vec<(f64, u64)> {
        let mut counts: HashMap<u64, u64, BuildHasherDefault<BitsHasher>> = HashMap::default();
        for &r in train_rows.iter().flatten() {
            let v = column[r as usize];
            // -0.0 and 0.0 are one value.
            let v = if v == 0.0 { 0.0 } else { v };
            *counts.entry(v.to_bits()).or_default() += 1;
        }
        let mut value_counts: Vec<(f64, u64)> = counts.into_iter().map(|(bits, n)| (f64::from_bits(bits), n)).collect();
        value_counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        value_counts
    };
    let counted: Vec<Vec<(f64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = columns.iter().map(|c| scope.spawn(move || count(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let features = names
        .iter()
        .zip(&counted)
        .map(|(name, value_counts)| FeatureBins::from_value_counts(name, value_counts, max_bins))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(BinEdges { features })
}

/// A hasher for f64 bit patterns: SplitMix64's finaliser, which spreads the high bits (where
/// small integers differ) into the low bits the table indexes by. SipHash would dominate the
/// counting.
#[derive(Default)]
struct BitsHasher(u64);

impl std::hash::Hasher for BitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = split::mix(v);
    }
}

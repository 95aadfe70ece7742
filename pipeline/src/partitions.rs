//! Encoded partitions: the driver's, assembled from every unit of the file, and an executor's,
//! read from its own rows of the file.

use std::path::Path;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use canopy_proto::partition::encode;
use canopy_tree::BinEdges;

use crate::counts::Counts;
use crate::error::{DataError, Result};
use crate::features::{Chunk, Encoding, Pipeline, UnitFeatures, Values};
use crate::scan::Source;
use crate::spec::FeatureSpec;
use crate::split::{Role, RowRanges, assign};

/// Each destination's chunks of every unit, concatenated in file order: each destination sized
/// once, then filled unit by unit, each unit freed as it goes.
pub fn assemble(units: Vec<Vec<Chunk>>, destinations: usize, values: Values, features: usize, numbered: bool) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = (0..destinations)
        .map(|d| Chunk::with_capacity(values, features, units.iter().map(|u| u.get(d).map_or(0, |c| c.rows)).sum(), numbered))
        .collect();
    for unit in units {
        out.iter_mut().zip(unit).for_each(|(all, chunk)| all.append(chunk));
    }
    out
}

/// The features an executor computes and how it encodes them: sent as JSON, as in model files.
/// The encoding is absent when the executor only counts (it comes from the counts).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureEncoding {
    pub features: FeatureSpec,
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

/// The counting pass's totals, on the driver or on an executor: every unit's counts, and the
/// (training, test) rows of each slot (a partition among those counted), merged as each unit
/// finishes. Counts are sums, so any order of units gives the same totals.
pub struct CountPass {
    totals: Mutex<(Counts, Vec<[u64; 2]>)>,
}

impl CountPass {
    pub fn new(slots: usize) -> CountPass {
        CountPass { totals: Mutex::new((Counts::default(), vec![[0u64; 2]; slots])) }
    }

    /// Adds one unit; `role` gives a row's side of the split, `slot` its slot (when there are
    /// slots) from its row number.
    pub fn add(&self, features: &UnitFeatures, role: impl Fn(u64) -> Role, slot: impl Fn(u64) -> usize) -> Result<()> {
        let counts = Counts::of(features, &role);
        let mut totals = self.totals.lock().map_err(|_| DataError::Internal("a counting thread panicked".into()))?;
        let (total, slots) = &mut *totals;
        if !slots.is_empty() {
            for &row in &features.row_numbers {
                slots[slot(row)][usize::from(role(row) == Role::Test)] += 1;
            }
        }
        *total = std::mem::take(total).merge(counts);
        Ok(())
    }

    pub fn finish(self) -> Result<(Counts, Vec<[u64; 2]>)> {
        self.totals.into_inner().map_err(|_| DataError::Internal("a counting thread panicked".into()))
    }
}

/// Counts of partitions `indexes` (ascending, distinct) of the file at `location`, as the
/// driver's counting pass makes them, read on every core: their merged counts, and each one's
/// training and test rows. The file must be the one the driver saw (`version`, rows).
pub async fn count(
    location: &Path,
    version: &str,
    spec: &FeatureSpec,
    layout: RowPartitioning,
    indexes: &[u32],
) -> Result<(Counts, Vec<[u64; 2]>)> {
    let source = open_same(location, version, layout.rows).await?;
    let pipeline = Pipeline::new(location, &source.schema, spec, true)?;
    let RowPartitioning { rows, partitions, seed, test_fraction } = layout;
    let ranges = RowRanges::new(partitions, rows);
    let position = positions(indexes, partitions)?;
    let role = |row: u64| assign(seed, row, test_fraction, partitions).0;
    let pass = CountPass::new(indexes.len());
    let wanted: Vec<_> = indexes.iter().map(|&i| ranges.range(i)).collect();
    source
        .for_each_in(pipeline.columns(), &wanted, |unit| {
            pass.add(&pipeline.featurize(unit)?, role, |row| position[ranges.of(row) as usize])
        })
        .await?;
    pass.finish()
}

/// Each partition's place among `indexes`, which must be ascending, distinct and below
/// `partitions`.
fn positions(indexes: &[u32], partitions: u32) -> Result<Vec<usize>> {
    if indexes.windows(2).any(|w| w[0] >= w[1]) || indexes.last().is_some_and(|&i| i >= partitions) {
        return Err(DataError::Internal(format!("partitions {indexes:?} of {partitions} are not ascending, distinct and in range")));
    }
    let mut position = vec![0usize; partitions as usize];
    indexes.iter().enumerate().for_each(|(k, &i)| position[i as usize] = k);
    Ok(position)
}

/// Opens `location` and checks that it is the file the driver read: its `version` and rows.
async fn open_same(location: &Path, version: &str, rows: u64) -> Result<Source> {
    let source = Source::open(location).await?;
    let differs = |what: String| DataError::UnreadableFile {
        path: location.to_path_buf(),
        reason: format!("{what} here than where the driver read it; every executor must read the same file"),
    };
    if source.version() != version {
        return Err(differs(format!("it is another version ({}, the driver's: {version})", source.version())));
    }
    if source.rows() != Some(rows) {
        return Err(differs(format!("it has {:?} rows rather than {rows}", source.rows())));
    }
    Ok(source)
}

/// How the rows of a job's file are split into partitions of contiguous rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowPartitioning {
    /// Rows in the file.
    pub rows: u64,
    /// Partitions of each role.
    pub partitions: u32,
    pub seed: u64,
    pub test_fraction: f64,
}

/// An executor's reader of its own partitions: the job's file opened as the driver saw it, its
/// feature pipeline, and the driver's encoding and bin edges.
pub struct PartitionReader {
    source: Source,
    pipeline: Pipeline,
    names: Vec<String>,
    encoding: Encoding,
    edges: BinEdges,
    layout: RowPartitioning,
    numbered: bool,
}

impl PartitionReader {
    /// Opens `location` and checks that it is the file the driver read: its `version` and its
    /// rows. `numbered`: training partitions keep each row's number (forest mode).
    pub async fn open(
        location: &Path,
        version: &str,
        spec: &FeatureSpec,
        encoding: Encoding,
        edges: BinEdges,
        layout: RowPartitioning,
        numbered: bool,
    ) -> Result<PartitionReader> {
        let source = open_same(location, version, layout.rows).await?;
        let pipeline = Pipeline::new(location, &source.schema, spec, true)?;
        Ok(PartitionReader { source, pipeline, names: spec.feature_names(), encoding, edges, layout, numbered })
    }

    /// Partitions of each role.
    pub fn partitions(&self) -> u32 {
        self.layout.partitions
    }

    /// A partition's chunk as the partition format's batch (`canopy_proto::partition`), as the
    /// driver would have shipped it.
    pub fn batch(&self, chunk: Chunk) -> Result<RecordBatch> {
        let numbers = (self.numbered && !chunk.row_numbers.is_empty()).then_some(chunk.row_numbers);
        encode(&self.names, chunk.columns, chunk.labels, numbers).map_err(|e| DataError::Internal(e.to_string()))
    }

    /// The rows of partitions `indexes` (ascending, distinct), encoded and binned, read in one
    /// pass on every core: each partition's training chunk and test chunk.
    pub async fn read(&self, indexes: &[u32]) -> Result<Vec<[Chunk; 2]>> {
        let RowPartitioning { rows, partitions, seed, test_fraction } = self.layout;
        let values = Values::Binned(&self.edges);
        // Destination 2k is the training rows of the k-th partition asked for, 2k + 1 its test rows.
        let layout = RowRanges::new(partitions, rows);
        let position = positions(indexes, partitions)?;
        let destination = |row: u64| {
            2 * position[layout.of(row) as usize]
                + match assign(seed, row, test_fraction, partitions).0 {
                    Role::Train => 0,
                    Role::Test => 1,
                }
        };
        let ranges: Vec<_> = indexes.iter().map(|&i| layout.range(i)).collect();
        let destinations = 2 * indexes.len();
        let units = self
            .source
            .for_each_in(self.pipeline.columns(), &ranges, |unit| {
                let features = self.pipeline.featurize(unit)?;
                self.encoding.encode(&self.pipeline, &features, values, destinations, destination, self.numbered)
            })
            .await?;
        let mut chunks = assemble(units, destinations, values, self.edges.features.len(), self.numbered).into_iter();
        let mut out = Vec::with_capacity(indexes.len());
        while let (Some(train), Some(mut test)) = (chunks.next(), chunks.next()) {
            // Only training rows need their numbers (their bootstrap weights).
            test.row_numbers = Vec::new();
            out.push([train, test]);
        }
        Ok(out)
    }
}

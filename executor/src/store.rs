//! What an executor holds for its current job: the tree crate's `LocalStats` (binned partitions
//! keyed by partition id, and the split log), the ensemble's raw rows in ensemble mode, and the
//! job's counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canopy_pipeline::partitions::PartitionReader;
use canopy_proto::partition::{Decoded, decode};
use canopy_tree::{BinEdges, HistogramLayout, LocalStats, PartitionId};

use crate::ExecutorError;
use crate::ensemble::EnsembleRows;
use crate::validate::JobKind;

pub struct Job {
    pub id: String,
    pub edges: BinEdges,
    pub num_classes: usize,
    /// Binned partitions and the split log: the same code the in-process learner runs.
    pub stats: LocalStats,
    /// Raw values, in ensemble mode only.
    pub ensemble: Option<EnsembleRows>,
    /// The job's file, when this executor reads its own partitions (LoadPartitions).
    pub reader: Option<Arc<PartitionReader>>,
    pub counters: JobCounters,
}

#[derive(Debug, Default, Clone)]
pub struct JobCounters {
    pub tasks: u64,
    pub busy: BTreeMap<&'static str, Duration>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl JobCounters {
    /// Counts one task and its time.
    pub fn record(&mut self, phase: &'static str, took: Duration) {
        self.tasks += 1;
        self.add_time(phase, took);
    }

    /// Adds time to a phase without counting a task (the receive half of a partition load).
    pub fn add_time(&mut self, phase: &'static str, took: Duration) {
        *self.busy.entry(phase).or_default() += took;
    }
}

impl Job {
    pub fn new(id: String, edges: BinEdges, num_classes: usize, kind: JobKind) -> Self {
        let layout = HistogramLayout::new(&edges, num_classes);
        let stats = match &kind {
            JobKind::Forest(plan) => LocalStats::for_plan(layout, plan),
            JobKind::Exact | JobKind::Ensemble => LocalStats::new(layout),
        };
        Job {
            id,
            edges,
            num_classes,
            stats,
            ensemble: (kind == JobKind::Ensemble).then(EnsembleRows::default),
            reader: None,
            counters: JobCounters::default(),
        }
    }

    pub fn check_id(&self, requested: &str) -> Result<(), ExecutorError> {
        if requested != self.id {
            return Err(ExecutorError::WrongJob { requested: requested.to_string() });
        }
        Ok(())
    }

    /// Decodes and stores one received partition; returns its rows.
    pub fn store(&mut self, id: PartitionId, declared_rows: u64, batches: &[arrow::array::RecordBatch]) -> Result<u64, ExecutorError> {
        // Refused before decoding costs anything; `insert` checks again for its other callers.
        if self.stats.holds(id) {
            return Err(ExecutorError::Tree(canopy_tree::TreeError::DuplicatePartition { partition: id.to_string() }));
        }
        let Decoded { binned, raw } = decode(batches, &self.edges, self.num_classes, self.ensemble.is_some())
            .map_err(|e| ExecutorError::PartitionData(format!("partition {id}: {e}")))?;
        let rows = binned.num_rows() as u64;
        if rows != declared_rows {
            return Err(ExecutorError::PartitionData(format!("partition {id} holds {rows} rows, its descriptor declared {declared_rows}")));
        }
        self.stats.insert(id, binned)?;
        if let (Some(ensemble), Some(raw)) = (&mut self.ensemble, raw) {
            ensemble.insert(id, raw);
        }
        Ok(rows)
    }

    /// Drops a partition that moved elsewhere; returns the rows dropped.
    pub fn release(&mut self, id: PartitionId) -> u64 {
        if let Some(ensemble) = &mut self.ensemble {
            ensemble.remove(id);
        }
        self.stats.remove(id).map_or(0, |p| p.num_rows() as u64)
    }

    /// Bytes a row takes on the wire and once held (bins, label, row index; raw values too in
    /// ensemble mode; in a forest its number, and a row index and weight per tree), for the
    /// memory budget.
    pub fn bytes_per_row(&self) -> (u64, u64) {
        let features = self.edges.num_features() as u64;
        match (&self.ensemble, self.stats.forest_trees()) {
            (Some(_), _) => (8 * features + 1, 9 * features + 6),
            (None, Some(trees)) => (features + 9, features + 9 + 5 * u64::from(trees)),
            (None, None) => (features + 1, features + 5),
        }
    }

    pub fn rows_held(&self) -> u64 {
        self.stats.rows()
    }
}

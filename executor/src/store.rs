//! What an executor holds for its current job: binned partitions (and raw values in ensemble
//! mode), the split log, and the job's counters.

use std::collections::BTreeMap;
use std::time::Duration;

use canopy_tree::partition::SplitLog;
use canopy_tree::{BinEdges, BinnedPartition, HistogramLayout, SplitDecision};

use crate::ExecutorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exact,
    Ensemble,
}

/// Raw feature values of a partition, kept only in ensemble mode (linfa fits on raw values).
#[derive(Debug, Clone)]
pub struct RawRows {
    /// Row-major, `features` values per row.
    pub values: Vec<f64>,
    pub labels: Vec<u8>,
}

pub struct Job {
    pub id: String,
    pub edges: BinEdges,
    pub layout: HistogramLayout,
    pub num_classes: usize,
    pub mode: Mode,
    pub train: BTreeMap<u32, BinnedPartition>,
    pub test: BTreeMap<u32, BinnedPartition>,
    pub raw_train: BTreeMap<u32, RawRows>,
    pub raw_test: BTreeMap<u32, RawRows>,
    pub log: SplitLog,
    pub stats: JobStats,
}

#[derive(Debug, Default, Clone)]
pub struct JobStats {
    pub tasks: u64,
    pub busy: BTreeMap<&'static str, Duration>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl JobStats {
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
    pub fn new(id: String, edges: BinEdges, num_classes: usize, mode: Mode) -> Self {
        let layout = HistogramLayout::new(&edges, num_classes);
        Job {
            id,
            edges,
            layout,
            num_classes,
            mode,
            train: BTreeMap::new(),
            test: BTreeMap::new(),
            raw_train: BTreeMap::new(),
            raw_test: BTreeMap::new(),
            log: SplitLog::default(),
            stats: JobStats::default(),
        }
    }

    pub fn check_id(&self, requested: &str) -> Result<(), ExecutorError> {
        if requested != self.id {
            return Err(ExecutorError::WrongJob { requested: requested.to_string(), current: self.id.clone() });
        }
        Ok(())
    }

    /// Adds a training partition; one that arrives mid-run replays the split log so its rows
    /// reach the same nodes as everyone else's.
    pub fn add_train(&mut self, id: u32, mut partition: BinnedPartition) -> Result<(), ExecutorError> {
        partition.apply_splits(self.log.decisions())?;
        self.train.insert(id, partition);
        Ok(())
    }

    pub fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<(), ExecutorError> {
        let new = self.log.append(first_index, decisions)?.to_vec();
        for partition in self.train.values_mut() {
            partition.apply_splits(&new)?;
        }
        Ok(())
    }

    pub fn rows_held(&self) -> u64 {
        self.train.values().chain(self.test.values()).map(|p| p.num_rows() as u64).sum()
    }
}

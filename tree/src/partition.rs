//! One partition of binned rows, as an executor (or the in-process learner) holds it.
//!
//! Columns are stored feature-major, one byte per value. Rows are kept in `order`, grouped by
//! the open tree node they reached, so that a node's histogram reads only that node's rows
//! (LightGBM's data partition); applying a split stably partitions one group in two.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{BinEdges, ConfusionMatrix, HistogramLayout, NodeHistogram, NodeId, Tree, TreeError};

/// "Rows of `node` with `bin(feature) <= threshold_bin` go to `left`, the others to `right`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitDecision {
    pub node: NodeId,
    pub feature: u32,
    pub threshold_bin: u8,
    pub left: NodeId,
    pub right: NodeId,
}

/// The run's decisions in order. A partition that arrives late (reassigned from a dead
/// executor) replays the whole log; a repeated request is recognised by its position.
#[derive(Debug, Clone, Default)]
pub struct SplitLog {
    decisions: Vec<SplitDecision>,
}

impl SplitLog {
    /// Appends `decisions`, which start at position `first_index`, and returns the ones that
    /// are new (a retried request may overlap what is already logged).
    pub fn append(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<&[SplitDecision], TreeError> {
        let have = self.decisions.len();
        if first_index > have {
            return Err(TreeError::SplitLogGap { expected: have, found: first_index });
        }
        let already = (have - first_index).min(decisions.len());
        let start = self.decisions.len();
        self.decisions.extend_from_slice(&decisions[already..]);
        Ok(&self.decisions[start..])
    }
    pub fn decisions(&self) -> &[SplitDecision] {
        &self.decisions
    }
    pub fn len(&self) -> usize {
        self.decisions.len()
    }
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct BinnedPartition {
    bins: Vec<Vec<u8>>,
    labels: Vec<u8>,
    order: Vec<u32>,
    node_rows: BTreeMap<NodeId, Range<usize>>,
    scratch: Vec<u32>,
}

impl BinnedPartition {
    /// Bins raw columns (one slice per feature, all the same length) with the global edges.
    pub fn from_columns(
        columns: &[&[f64]],
        labels: Vec<u8>,
        edges: &BinEdges,
        num_classes: usize,
    ) -> Result<Self, TreeError> {
        if columns.len() != edges.num_features() {
            return Err(TreeError::FeatureCountMismatch { expected: edges.num_features(), found: columns.len() });
        }
        let rows = labels.len();
        if u32::try_from(rows).is_err() {
            return Err(TreeError::RaggedColumns { detail: format!("{rows} rows exceed one partition's limit of 2^32") });
        }
        let mut bins = Vec::with_capacity(columns.len());
        for (column, feature) in columns.iter().zip(&edges.features) {
            if column.len() != rows {
                return Err(TreeError::RaggedColumns {
                    detail: format!("feature '{}' has {} values for {rows} labels", feature.name, column.len()),
                });
            }
            let mut binned = Vec::with_capacity(rows);
            for (row, &value) in column.iter().enumerate() {
                if !value.is_finite() {
                    return Err(TreeError::NonFiniteValue { feature: feature.name.clone(), row, value });
                }
                binned.push(feature.bin_of(value));
            }
            bins.push(binned);
        }
        if let Some(row) = labels.iter().position(|&l| usize::from(l) >= num_classes) {
            return Err(TreeError::LabelOutOfRange { row, label: u32::from(labels[row]), num_classes });
        }
        Ok(Self::from_binned(bins, labels))
    }

    /// Wraps already binned columns; all rows start at the root.
    pub fn from_binned(bins: Vec<Vec<u8>>, labels: Vec<u8>) -> Self {
        let rows = labels.len();
        let order: Vec<u32> = (0..rows as u32).collect();
        let mut node_rows = BTreeMap::new();
        node_rows.insert(NodeId::ROOT, 0..rows);
        BinnedPartition { bins, labels, order, node_rows, scratch: Vec::new() }
    }

    pub fn num_rows(&self) -> usize {
        self.labels.len()
    }

    /// Bytes held: one per binned value, one per label, four per row index.
    pub fn heap_bytes(&self) -> usize {
        self.bins.iter().map(Vec::capacity).sum::<usize>() + self.labels.capacity() + 4 * self.order.capacity()
    }

    /// Routes the rows of each split node to its children.
    pub fn apply_splits(&mut self, decisions: &[SplitDecision]) -> Result<(), TreeError> {
        for d in decisions {
            let Some(range) = self.node_rows.remove(&d.node) else { continue };
            let column = self
                .bins
                .get(d.feature as usize)
                .ok_or(TreeError::UnknownFeature { feature: d.feature, features: self.bins.len() })?;
            // Stable partition: left rows compact in place, right rows via scratch.
            self.scratch.clear();
            let mut write = range.start;
            for read in range.clone() {
                let row = self.order[read];
                if column[row as usize] <= d.threshold_bin {
                    self.order[write] = row;
                    write += 1;
                } else {
                    self.scratch.push(row);
                }
            }
            self.order[write..range.end].copy_from_slice(&self.scratch);
            self.node_rows.insert(d.left, range.start..write);
            self.node_rows.insert(d.right, write..range.end);
        }
        Ok(())
    }

    /// Adds this partition's counts for `nodes` into `out` (one histogram per node).
    pub fn add_histograms(&self, nodes: &[NodeId], layout: &HistogramLayout, out: &mut [NodeHistogram]) {
        let classes = layout.num_classes();
        for (node, hist) in nodes.iter().zip(out.iter_mut()) {
            let Some(range) = self.node_rows.get(node) else { continue };
            let rows = &self.order[range.clone()];
            for (feature, column) in self.bins.iter().enumerate() {
                let counts = &mut hist.counts[layout.feature_start(feature)..];
                for &row in rows {
                    let row = row as usize;
                    counts[usize::from(column[row]) * classes + usize::from(self.labels[row])] += 1;
                }
            }
        }
    }

    /// Adds (actual, predicted) of every row to `cm`.
    pub fn add_confusion(&self, tree: &Tree, cm: &mut ConfusionMatrix) {
        for row in 0..self.labels.len() {
            let predicted = tree.predict_binned(|feature| self.bins[feature][row]);
            cm.add(usize::from(self.labels[row]), predicted as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeatureBins;

    fn edges() -> BinEdges {
        BinEdges { features: vec![FeatureBins { name: "x".into(), thresholds: vec![0.5, 1.5] }] }
    }

    fn d(node: u32, threshold_bin: u8, left: u32, right: u32) -> SplitDecision {
        SplitDecision { node: NodeId(node), feature: 0, threshold_bin, left: NodeId(left), right: NodeId(right) }
    }

    #[test]
    fn splits_route_rows_and_histograms_follow() {
        let x = [2.0, 0.0, 1.0, 2.0, 0.0];
        let mut p = BinnedPartition::from_columns(&[&x], vec![1, 0, 0, 1, 1], &edges(), 2).expect("valid");
        let layout = HistogramLayout::new(&edges(), 2);
        p.apply_splits(&[d(0, 0, 1, 2)]).expect("applies");
        let mut out = vec![NodeHistogram::zeros(&layout); 2];
        p.add_histograms(&[NodeId(1), NodeId(2)], &layout, &mut out);
        // node 1: x=0 rows (labels 0, 1); node 2: x=1 (label 0), x=2 twice (label 1).
        assert_eq!(out[0].counts, vec![1, 1, 0, 0, 0, 0]);
        assert_eq!(out[1].counts, vec![0, 0, 1, 0, 0, 2]);
    }

    #[test]
    fn log_accepts_retries_and_rejects_gaps() {
        let mut log = SplitLog::default();
        assert_eq!(log.append(0, &[d(0, 0, 1, 2)]).expect("first").len(), 1);
        assert_eq!(log.append(0, &[d(0, 0, 1, 2), d(1, 0, 3, 4)]).expect("overlap").to_vec(), vec![d(1, 0, 3, 4)]);
        assert_eq!(log.append(5, &[d(2, 0, 5, 6)]), Err(TreeError::SplitLogGap { expected: 2, found: 5 }));
    }

    #[test]
    fn bad_rows_are_named() {
        let err = BinnedPartition::from_columns(&[&[1.0, f64::NAN]], vec![0, 0], &edges(), 2).expect_err("nan");
        assert!(matches!(err, TreeError::NonFiniteValue { row: 1, .. }));
        let err = BinnedPartition::from_columns(&[&[1.0, 2.0]], vec![0, 2], &edges(), 2).expect_err("label");
        assert_eq!(err, TreeError::LabelOutOfRange { row: 1, label: 2, num_classes: 2 });
    }
}

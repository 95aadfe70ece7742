//! Class-count histograms of one node: a flat array `[feature][bin][class]` with per-feature
//! offsets. Counts are integers, so merging in any order gives the same bits.

use serde::{Deserialize, Serialize};

use crate::{BinEdges, TreeError};

/// Where each feature's bins start in a node histogram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramLayout {
    /// `bin_offsets[f]` = bins of all features before `f`; one extra entry holds the total.
    bin_offsets: Vec<usize>,
    num_classes: usize,
}

impl HistogramLayout {
    pub fn new(edges: &BinEdges, num_classes: usize) -> Self {
        let mut bin_offsets = Vec::with_capacity(edges.num_features() + 1);
        let mut total = 0;
        for feature in &edges.features {
            bin_offsets.push(total);
            total += feature.num_bins();
        }
        bin_offsets.push(total);
        HistogramLayout { bin_offsets, num_classes }
    }

    pub fn num_features(&self) -> usize {
        self.bin_offsets.len() - 1
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    pub fn num_bins(&self, feature: usize) -> usize {
        self.bin_offsets[feature + 1] - self.bin_offsets[feature]
    }
    /// Index of the first count of `feature` in the flat array.
    pub fn feature_start(&self, feature: usize) -> usize {
        self.bin_offsets[feature] * self.num_classes
    }
    /// Total counts in one node histogram.
    pub fn len(&self) -> usize {
        self.bin_offsets[self.bin_offsets.len() - 1] * self.num_classes
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes_per_node(&self) -> usize {
        self.len() * std::mem::size_of::<u64>()
    }
}

/// The class counts of one node, per feature and bin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHistogram {
    pub counts: Vec<u64>,
}

impl NodeHistogram {
    pub fn zeros(layout: &HistogramLayout) -> Self {
        NodeHistogram { counts: vec![0; layout.len()] }
    }

    /// Checks a histogram that came from elsewhere against the layout.
    pub fn from_counts(node: u32, counts: Vec<u64>, layout: &HistogramLayout) -> Result<Self, TreeError> {
        if counts.len() != layout.len() {
            return Err(TreeError::HistogramSizeMismatch { node, expected: layout.len(), found: counts.len() });
        }
        Ok(NodeHistogram { counts })
    }

    pub fn merge(&mut self, other: &NodeHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// `parent - self`: the sibling's histogram, derived instead of built.
    pub fn sibling_of(&self, parent: &NodeHistogram, sibling_node: u32) -> Result<NodeHistogram, TreeError> {
        let counts = parent
            .counts
            .iter()
            .zip(&self.counts)
            .map(|(p, c)| p.checked_sub(*c))
            .collect::<Option<Vec<u64>>>()
            .ok_or(TreeError::SubtractionUnderflow { node: sibling_node })?;
        Ok(NodeHistogram { counts })
    }

    /// Class counts of the whole node (every feature's bins sum to them; feature 0 is used).
    pub fn class_counts(&self, layout: &HistogramLayout) -> Vec<u64> {
        let mut totals = vec![0; layout.num_classes()];
        if layout.num_features() == 0 {
            return totals;
        }
        let c = layout.num_classes();
        let start = layout.feature_start(0);
        for bin in 0..layout.num_bins(0) {
            let counts = &self.counts[start + bin * c..start + (bin + 1) * c];
            totals.iter_mut().zip(counts).for_each(|(t, n)| *t += n);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeatureBins;

    fn layout() -> HistogramLayout {
        let edges = BinEdges {
            features: vec![
                FeatureBins { name: "a".into(), thresholds: vec![0.5] },
                FeatureBins { name: "b".into(), thresholds: vec![0.5, 1.5] },
            ],
        };
        HistogramLayout::new(&edges, 2)
    }

    #[test]
    fn layout_offsets() {
        let l = layout();
        assert_eq!((l.len(), l.feature_start(1), l.num_bins(1)), (10, 4, 3));
    }

    #[test]
    fn merge_then_subtract_is_identity() {
        let l = layout();
        let a = NodeHistogram::from_counts(1, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &l).expect("size");
        let b = NodeHistogram::from_counts(2, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], &l).expect("size");
        let mut parent = a.clone();
        parent.merge(&b);
        assert_eq!(b.sibling_of(&parent, 1).expect("no underflow"), a);
        assert_eq!(a.class_counts(&l), vec![4, 6]);
        assert_eq!(parent.sibling_of(&a, 9), Err(TreeError::SubtractionUnderflow { node: 9 }));
    }

    #[test]
    fn wrong_size_is_rejected() {
        assert_eq!(
            NodeHistogram::from_counts(3, vec![0; 4], &layout()),
            Err(TreeError::HistogramSizeMismatch { node: 3, expected: 10, found: 4 })
        );
    }
}

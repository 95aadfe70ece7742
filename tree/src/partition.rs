//! One partition of binned rows, as an executor (or the in-process learner) holds it.
//!
//! Rows are stored row-major, one byte per binned value followed by the label byte, so building
//! a histogram reads each row once, as one short contiguous run. Rows are kept in `order`,
//! grouped by the open tree node they reached, so that a node's histogram reads only that node's
//! rows (LightGBM's data partition); applying a split stably partitions one group in two.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::sampling::RowSampler;
use crate::{BinEdges, ConfusionMatrix, FeatureBins, HistogramLayout, Model, NodeHistogram, NodeId, TreeError};

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
#[derive(Debug, Clone)]
pub struct SplitLog {
    decisions: Vec<SplitDecision>,
    /// The leaves so far: the roots, then each decision's children instead of its node.
    leaves: BTreeSet<NodeId>,
    /// Every node id used, leaves and split nodes: a child id is never reused.
    used: BTreeSet<NodeId>,
}

impl Default for SplitLog {
    fn default() -> Self {
        Self::new(1)
    }
}

impl SplitLog {
    /// The log of a forest of `num_trees` trees, whose roots are nodes `0..num_trees`.
    pub fn new(num_trees: u32) -> Self {
        let roots: BTreeSet<NodeId> = (0..num_trees).map(NodeId).collect();
        SplitLog { decisions: Vec::new(), leaves: roots.clone(), used: roots }
    }

    /// Whether `node` is a leaf of the tree the log describes (rows can be there).
    pub fn is_leaf(&self, node: NodeId) -> bool {
        self.leaves.contains(&node)
    }

    /// Appends `decisions`, which start at position `first_index`, and returns the ones that
    /// are new. A retried request may overlap what is already logged, but only with the same
    /// decisions: a contradicting overlap is an error. Every new decision is checked against
    /// `layout` before any is logged, so a refused request leaves the log as it was.
    pub fn append(
        &mut self,
        first_index: usize,
        decisions: &[SplitDecision],
        layout: &HistogramLayout,
    ) -> Result<&[SplitDecision], TreeError> {
        let have = self.decisions.len();
        if first_index > have {
            return Err(TreeError::SplitLogGap { expected: have, found: first_index });
        }
        let already = (have - first_index).min(decisions.len());
        let (mut leaves, mut used) = (self.leaves.clone(), self.used.clone());
        for (offset, (logged, found)) in self.decisions[first_index..].iter().zip(decisions).enumerate() {
            if logged != found {
                return Err(TreeError::SplitLogConflict {
                    index: first_index + offset,
                    logged: format!("{logged:?}"),
                    found: format!("{found:?}"),
                });
            }
        }
        for (offset, d) in decisions[already..].iter().enumerate() {
            let index = have + offset;
            let invalid = |detail: String| TreeError::InvalidDecision { index, detail };
            let feature = d.feature as usize;
            if feature >= layout.num_features() {
                return Err(invalid(format!("feature {} of {}", d.feature, layout.num_features())));
            }
            if usize::from(d.threshold_bin) + 1 >= layout.num_bins(feature) {
                return Err(invalid(format!(
                    "threshold bin {} leaves no bin on the right of feature {feature}'s {} bins",
                    d.threshold_bin,
                    layout.num_bins(feature)
                )));
            }
            if d.left == d.right || d.left == d.node || d.right == d.node {
                return Err(invalid(format!("node {} splits into {} and {}: the three must differ", d.node.0, d.left.0, d.right.0)));
            }
            if !leaves.remove(&d.node) {
                return Err(invalid(format!("node {} is not a leaf of the tree", d.node.0)));
            }
            for child in [d.left, d.right] {
                if !used.insert(child) {
                    return Err(invalid(format!("child id {} is already used", child.0)));
                }
                leaves.insert(child);
            }
        }
        (self.leaves, self.used) = (leaves, used);
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

/// Counters per feature in the kernel compiled per feature count: every byte-sized bin, plus
/// padding so that features' counters are not 4 KiB apart (loads would wait on stores to a
/// different counter with the same low address bits).
const PADDED_BINS: usize = 256 + 16;

/// Nodes with fewer rows (in one partition) take the general kernel.
const SMALL_NODE_ROWS: usize = 1024;

/// Rows counted into u32 counters before they flush into the u64 totals: at most 255 each.
const ROWS_PER_FLUSH: usize = (u32::MAX / 255) as usize;

#[derive(Debug, Clone)]
pub struct BinnedPartition {
    /// `stride` bytes per row: the bin of each feature, then the label.
    rows: Vec<u8>,
    stride: usize,
    /// Each row's number in the input (file order), which seeds its bootstrap weights.
    /// Present when the partition came with them; dropped once the forest's samples are drawn.
    row_numbers: Option<Vec<u64>>,
    /// One per tree: the tree's rows, grouped by the open node they reached. A single tree
    /// holds every row once; a forest's trees hold their bootstrap samples.
    samples: Vec<Sample>,
    /// The tree and the run of its sample's `order` that each open node's rows occupy. Node
    /// ids are unique across a forest (tree `t`'s root is node `t`).
    node_rows: BTreeMap<NodeId, (usize, Range<usize>)>,
    scratch: Vec<u32>,
    scratch_weights: Vec<u8>,
}

/// The rows one tree learns from, and their weights (`None`: every weight is 1).
#[derive(Debug, Clone)]
struct Sample {
    order: Vec<u32>,
    weights: Option<Vec<u8>>,
}

impl BinnedPartition {
    /// Bins raw columns (one slice per feature, all the same length) with the global edges.
    pub fn from_columns(columns: &[&[f64]], labels: Vec<u8>, edges: &BinEdges, num_classes: usize) -> Result<Self, TreeError> {
        Self::pack(columns, &labels, edges, num_classes, |feature, row, value| {
            if value.is_finite() {
                Ok(feature.bin_of(value))
            } else {
                Err(TreeError::NonFiniteValue { feature: feature.name.clone(), row, value })
            }
        })
    }

    /// Packs columns binned elsewhere (by the driver), checking every bin against the edges.
    pub fn from_bin_columns(columns: &[&[u8]], labels: &[u8], edges: &BinEdges, num_classes: usize) -> Result<Self, TreeError> {
        Self::pack(columns, labels, edges, num_classes, |feature, row, bin| {
            let bins = feature.num_bins();
            if usize::from(bin) < bins { Ok(bin) } else { Err(TreeError::BinOutOfRange { feature: feature.name.clone(), row, bin, bins }) }
        })
    }

    /// Checks shapes and labels and packs rows, turning each value into its bin with `to_bin`.
    fn pack<T: Copy>(
        columns: &[&[T]],
        labels: &[u8],
        edges: &BinEdges,
        num_classes: usize,
        to_bin: impl Fn(&FeatureBins, usize, T) -> Result<u8, TreeError>,
    ) -> Result<Self, TreeError> {
        if columns.len() != edges.num_features() {
            return Err(TreeError::FeatureCountMismatch { expected: edges.num_features(), found: columns.len() });
        }
        let rows = labels.len();
        if u32::try_from(rows).is_err() {
            return Err(TreeError::RaggedColumns { detail: format!("{rows} rows exceed one partition's limit of 2^32") });
        }
        let stride = columns.len() + 1;
        let mut packed = vec![0u8; rows * stride];
        for (f, (column, feature)) in columns.iter().zip(&edges.features).enumerate() {
            if column.len() != rows {
                return Err(TreeError::RaggedColumns {
                    detail: format!("feature '{}' has {} values for {rows} labels", feature.name, column.len()),
                });
            }
            for (row, &value) in column.iter().enumerate() {
                packed[row * stride + f] = to_bin(feature, row, value)?;
            }
        }
        for (row, &label) in labels.iter().enumerate() {
            if usize::from(label) >= num_classes {
                return Err(TreeError::LabelOutOfRange { row, label: u32::from(label), num_classes });
            }
            packed[row * stride + stride - 1] = label;
        }
        Ok(Self::from_packed(packed, stride))
    }

    /// Wraps already binned columns (one `Vec` per feature) and labels.
    pub fn from_binned(bins: Vec<Vec<u8>>, labels: Vec<u8>) -> Self {
        let stride = bins.len() + 1;
        let mut packed = vec![0u8; labels.len() * stride];
        for (row, chunk) in packed.chunks_exact_mut(stride).enumerate() {
            for (f, column) in bins.iter().enumerate() {
                chunk[f] = column[row];
            }
            chunk[stride - 1] = labels[row];
        }
        Self::from_packed(packed, stride)
    }

    /// Wraps row-major rows of `stride` bytes (bins, then label); all rows start at the root.
    fn from_packed(rows: Vec<u8>, stride: usize) -> Self {
        let n = rows.len() / stride;
        let order: Vec<u32> = (0..n as u32).collect();
        let node_rows = BTreeMap::from([(NodeId::ROOT, (0, 0..n))]);
        let samples = vec![Sample { order, weights: None }];
        BinnedPartition { rows, stride, row_numbers: None, samples, node_rows, scratch: Vec::new(), scratch_weights: Vec::new() }
    }

    /// Attaches each row's number in the input (needed to draw a forest's samples).
    pub fn with_row_numbers(mut self, row_numbers: Vec<u64>) -> Result<Self, TreeError> {
        if row_numbers.len() != self.num_rows() {
            return Err(TreeError::RaggedColumns { detail: format!("{} row numbers for {} rows", row_numbers.len(), self.num_rows()) });
        }
        self.row_numbers = Some(row_numbers);
        Ok(self)
    }

    /// Replaces the single tree's rows with the samples of `num_trees` trees: tree `t` holds
    /// the rows whose weight `sampler` draws above zero, at node `t`. Must come before any split.
    pub fn draw_samples(&mut self, sampler: &RowSampler, num_trees: u32) -> Result<(), TreeError> {
        let Some(numbers) = self.row_numbers.take() else {
            return Err(TreeError::MissingRowNumbers);
        };
        if self.samples.len() != 1 || self.node_rows.len() != 1 {
            return Err(TreeError::MalformedTree { detail: "samples are drawn before the first split".into() });
        }
        self.samples.clear();
        self.node_rows.clear();
        for tree in 0..num_trees {
            let (mut order, mut weights) = (Vec::new(), Vec::new());
            for (row, &number) in numbers.iter().enumerate() {
                let weight = sampler.weight(tree, number);
                if weight > 0 {
                    order.push(row as u32);
                    weights.push(u8::try_from(weight).unwrap_or(u8::MAX));
                }
            }
            let weights = (!weights.iter().all(|&w| w == 1)).then_some(weights);
            order.shrink_to_fit();
            self.node_rows.insert(NodeId(tree), (tree as usize, 0..order.len()));
            self.samples.push(Sample { order, weights });
        }
        Ok(())
    }

    pub fn num_rows(&self) -> usize {
        self.rows.len() / self.stride
    }

    fn num_features(&self) -> usize {
        self.stride - 1
    }

    /// Bytes held: one per binned value, one per label, and per tree four per sampled row
    /// index plus one per weight.
    pub fn heap_bytes(&self) -> usize {
        let samples: usize = self.samples.iter().map(|s| 4 * s.order.capacity() + s.weights.as_ref().map_or(0, Vec::capacity)).sum();
        self.rows.capacity() + samples + 8 * self.row_numbers.as_ref().map_or(0, Vec::capacity)
    }

    /// Routes the rows of each split node to its children.
    pub fn apply_splits(&mut self, decisions: &[SplitDecision]) -> Result<(), TreeError> {
        for d in decisions {
            let feature = d.feature as usize;
            if feature >= self.num_features() {
                return Err(TreeError::UnknownFeature { feature: d.feature, features: self.num_features() });
            }
            let Some((tree, range)) = self.node_rows.remove(&d.node) else {
                continue;
            };
            let sample = &mut self.samples[tree];
            let (rows, stride) = (&self.rows, self.stride);
            let goes_left = |row: u32| usize::from(rows[row as usize * stride + feature] <= d.threshold_bin);
            // Stable partition without branches (which side a row goes is a coin flip to the
            // branch predictor): each row is written both to the left run, compacting in place,
            // and to scratch, and only the cursor of its side advances. Weights move alike.
            let len = range.len();
            self.scratch.resize(len, 0);
            let (mut write, mut right) = (range.start, 0);
            match &mut sample.weights {
                None => {
                    for read in range.clone() {
                        let row = sample.order[read];
                        let left = goes_left(row);
                        sample.order[write] = row;
                        self.scratch[right] = row;
                        write += left;
                        right += 1 - left;
                    }
                }
                Some(weights) => {
                    self.scratch_weights.resize(len, 0);
                    for read in range.clone() {
                        let (row, weight) = (sample.order[read], weights[read]);
                        let left = goes_left(row);
                        sample.order[write] = row;
                        weights[write] = weight;
                        self.scratch[right] = row;
                        self.scratch_weights[right] = weight;
                        write += left;
                        right += 1 - left;
                    }
                    weights[write..range.end].copy_from_slice(&self.scratch_weights[..right]);
                }
            }
            sample.order[write..range.end].copy_from_slice(&self.scratch[..right]);
            self.node_rows.insert(d.left, (tree, range.start..write));
            self.node_rows.insert(d.right, (tree, write..range.end));
        }
        Ok(())
    }

    /// Adds this partition's counts for `nodes` into `out` (one histogram per node); a row
    /// counts as many times as its weight in the node's tree.
    pub fn add_histograms(&self, nodes: &[NodeId], layout: &HistogramLayout, out: &mut [NodeHistogram]) {
        for (node, hist) in nodes.iter().zip(out.iter_mut()) {
            let Some((tree, range)) = self.node_rows.get(node) else {
                continue;
            };
            let sample = &self.samples[*tree];
            // Counters are u32, half the cache footprint of the totals; a chunk of rows cannot
            // overflow them (each row adds at most 255 to a counter).
            for chunk_start in range.clone().step_by(ROWS_PER_FLUSH) {
                let chunk = chunk_start..(chunk_start + ROWS_PER_FLUSH).min(range.end);
                let rows = &sample.order[chunk.clone()];
                let weights = sample.weights.as_ref().map(|w| &w[chunk]);
                self.count_rows(rows, weights, layout, hist);
            }
        }
    }

    /// Adds `rows` (each `weights` times, or once) into `hist`: the kernel compiled for the
    /// partition's feature count up to 16 features and 16 classes, the general one beyond, and
    /// for nodes too small to repay zeroing the compiled kernel's wider counters.
    fn count_rows(&self, rows: &[u32], weights: Option<&[u8]>, layout: &HistogramLayout, hist: &mut NodeHistogram) {
        if rows.len() < SMALL_NODE_ROWS {
            return self.count_rows_any(rows, weights, layout, hist);
        }
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match self.num_features() {
                    $($n if layout.num_classes() <= 16 => self.count_rows_of::<$n>(rows, weights, layout, hist),)*
                    _ => self.count_rows_any(rows, weights, layout, hist),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    }

    /// The kernel for `F` features. Counters are `[class][feature][PADDED_BINS]`: the row's label
    /// picks a block once, the loop over features unrolls, and a byte-sized bin indexes its
    /// feature's counters with no bounds check and no multiply. Only the bins in use are touched, so
    /// the padding costs no cache.
    fn count_rows_of<const F: usize>(&self, rows: &[u32], weights: Option<&[u8]>, layout: &HistogramLayout, hist: &mut NodeHistogram) {
        let classes = layout.num_classes();
        let mut counts = vec![[[0u32; PADDED_BINS]; F]; classes];
        let mut count = |row: u32, weight: u32| {
            let at = row as usize * (F + 1);
            let bytes = &self.rows[at..at + F + 1];
            let Ok(bins) = <&[u8; F]>::try_from(&bytes[..F]) else { return };
            let block = &mut counts[usize::from(bytes[F])];
            for f in 0..F {
                block[f][usize::from(bins[f])] += weight;
            }
        };
        match weights {
            None => rows.iter().for_each(|&row| count(row, 1)),
            Some(weights) => rows.iter().zip(weights).for_each(|(&row, &weight)| count(row, u32::from(weight))),
        }
        for (class, block) in counts.iter().enumerate() {
            for (f, feature) in block.iter().enumerate() {
                let start = layout.feature_start(f) + class;
                for (bin, &n) in feature[..layout.num_bins(f)].iter().enumerate() {
                    hist.counts[start + bin * classes] += u64::from(n);
                }
            }
        }
    }

    /// The general kernel: counters `[class][bin]`, each feature's bins from its start.
    fn count_rows_any(&self, rows: &[u32], weights: Option<&[u8]>, layout: &HistogramLayout, hist: &mut NodeHistogram) {
        let classes = layout.num_classes().max(1);
        let total_bins = layout.len() / classes;
        let starts: Vec<usize> = (0..self.num_features()).map(|f| layout.feature_start(f) / classes).collect();
        let mut counts = vec![0u32; layout.len()];
        let mut count = |row: u32, weight: u32| {
            let at = row as usize * self.stride;
            let (bins, label) = self.rows[at..at + self.stride].split_at(self.stride - 1);
            let base = usize::from(label[0]) * total_bins;
            let block = &mut counts[base..base + total_bins];
            for (&bin, &start) in bins.iter().zip(&starts) {
                block[start + usize::from(bin)] += weight;
            }
        };
        match weights {
            None => rows.iter().for_each(|&row| count(row, 1)),
            Some(weights) => rows.iter().zip(weights).for_each(|(&row, &weight)| count(row, u32::from(weight))),
        }
        for (class, block) in counts.chunks_exact(total_bins).enumerate() {
            for (bin, &n) in block.iter().enumerate() {
                hist.counts[bin * classes + class] += u64::from(n);
            }
        }
    }

    /// Adds (actual, predicted) of every row to `cm`.
    pub fn add_confusion(&self, model: Model<'_>, cm: &mut ConfusionMatrix) {
        for bytes in self.rows.chunks_exact(self.stride) {
            let predicted = model.predict_binned(&|feature| bytes[feature]);
            cm.add(usize::from(bytes[self.stride - 1]), predicted as usize);
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

    /// Every kernel (compiled per feature count up to 16 features and 16 classes, the general
    /// one beyond) counts what a plain loop over the rows counts, weighted or not.
    #[test]
    fn every_kernel_counts_like_a_plain_loop() {
        let mut rng = crate::testing::Lcg(3);
        let cases = [(1, 2), (4, 3), (9, 4), (16, 16), (17, 3), (2, 17)];
        for ((features, classes), rows) in cases.into_iter().flat_map(|c| [(c, 100), (c, 2 * SMALL_NODE_ROWS)]) {
            let edges = BinEdges {
                features: (0..features)
                    .map(|f| FeatureBins { name: format!("f{f}"), thresholds: (0..f % 5 + 1).map(|t| t as f64 + 0.5).collect() })
                    .collect(),
            };
            let bins: Vec<Vec<u8>> =
                edges.features.iter().map(|f| (0..rows).map(|_| rng.next(f.num_bins() as u64) as u8).collect()).collect();
            let labels: Vec<u8> = (0..rows).map(|_| rng.next(classes as u64) as u8).collect();
            let refs: Vec<&[u8]> = bins.iter().map(Vec::as_slice).collect();
            let layout = HistogramLayout::new(&edges, classes);
            let sampler = RowSampler::new(9, 1.0, true).expect("valid");
            let mut expected = vec![vec![0u64; layout.len()]; 2];
            for row in 0..rows {
                let weights = [1, u64::from(sampler.weight(1, row as u64))];
                for (f, column) in bins.iter().enumerate() {
                    let at = layout.feature_start(f) + usize::from(column[row]) * classes + usize::from(labels[row]);
                    expected[0][at] += weights[0];
                    expected[1][at] += weights[1];
                }
            }
            let single = BinnedPartition::from_bin_columns(&refs, &labels, &edges, classes).expect("valid");
            let mut forest = single.clone().with_row_numbers((0..rows as u64).collect()).expect("numbers");
            forest.draw_samples(&sampler, 2).expect("samples");
            let mut out = vec![NodeHistogram::zeros(&layout)];
            single.add_histograms(&[NodeId::ROOT], &layout, &mut out);
            assert_eq!(out[0].counts, expected[0], "{features} features, {classes} classes, {rows} rows");
            let mut out = vec![NodeHistogram::zeros(&layout)];
            forest.add_histograms(&[NodeId(1)], &layout, &mut out);
            assert_eq!(out[0].counts, expected[1], "{features} features, {classes} classes, {rows} rows, weighted");
        }
    }

    #[test]
    fn log_accepts_retries_and_rejects_gaps_and_conflicts() {
        let layout = HistogramLayout::new(&edges(), 2);
        let mut log = SplitLog::default();
        assert_eq!(log.append(0, &[d(0, 0, 1, 2)], &layout).expect("first").len(), 1);
        assert_eq!(log.append(0, &[d(0, 0, 1, 2), d(1, 0, 3, 4)], &layout).expect("overlap").to_vec(), vec![d(1, 0, 3, 4)]);
        assert_eq!(log.append(5, &[d(2, 0, 5, 6)], &layout), Err(TreeError::SplitLogGap { expected: 2, found: 5 }));
        assert!(matches!(log.append(1, &[d(1, 1, 3, 4)], &layout), Err(TreeError::SplitLogConflict { index: 1, .. })));
        assert_eq!(log.len(), 2, "a refused request logs nothing");
    }

    #[test]
    fn log_refuses_decisions_that_would_lose_rows() {
        let layout = HistogramLayout::new(&edges(), 2);
        let mut log = SplitLog::default();
        let bad_feature = SplitDecision { feature: 1, ..d(0, 0, 1, 2) };
        assert!(matches!(log.append(0, &[bad_feature], &layout), Err(TreeError::InvalidDecision { index: 0, .. })));
        assert!(
            matches!(log.append(0, &[d(0, 2, 1, 2)], &layout), Err(TreeError::InvalidDecision { .. })),
            "bin 2 of 3 leaves nothing right"
        );
        assert!(matches!(log.append(0, &[d(0, 0, 1, 1)], &layout), Err(TreeError::InvalidDecision { .. })), "left == right");
        assert_eq!(
            log.append(0, &[d(0, 0, 1, 2), d(3, 0, 7, 8)], &layout),
            Err(TreeError::InvalidDecision { index: 1, detail: "node 3 is not a leaf of the tree".into() })
        );
        assert_eq!(
            log.append(0, &[d(0, 0, 1, 2), d(1, 0, 3, 2)], &layout),
            Err(TreeError::InvalidDecision { index: 1, detail: "child id 2 is already used".into() })
        );
        assert_eq!(
            log.append(0, &[d(0, 0, 1, 2), d(0, 0, 3, 4)], &layout),
            Err(TreeError::InvalidDecision { index: 1, detail: "node 0 is not a leaf of the tree".into() })
        );
        assert!(log.is_empty(), "a refused request logs nothing");
        log.append(0, &[d(0, 0, 1, 2)], &layout).expect("valid");
        assert!(log.is_leaf(NodeId(1)) && log.is_leaf(NodeId(2)) && !log.is_leaf(NodeId(0)) && !log.is_leaf(NodeId(3)));
    }

    #[test]
    fn driver_binned_columns_are_checked() {
        let p = BinnedPartition::from_bin_columns(&[&[2, 0, 1]], &[1, 0, 0], &edges(), 2).expect("valid");
        assert_eq!(p.num_rows(), 3);
        let err = BinnedPartition::from_bin_columns(&[&[3]], &[0], &edges(), 2).expect_err("bin 3 of 3 bins");
        assert_eq!(err, TreeError::BinOutOfRange { feature: "x".into(), row: 0, bin: 3, bins: 3 });
    }

    #[test]
    fn bad_rows_are_named() {
        let err = BinnedPartition::from_columns(&[&[1.0, f64::NAN]], vec![0, 0], &edges(), 2).expect_err("nan");
        assert!(matches!(err, TreeError::NonFiniteValue { row: 1, .. }));
        let err = BinnedPartition::from_columns(&[&[1.0, 2.0]], vec![0, 2], &edges(), 2).expect_err("label");
        assert_eq!(err, TreeError::LabelOutOfRange { row: 1, label: 2, num_classes: 2 });
    }
}

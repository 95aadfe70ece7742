//! Best-split search over one node's histogram.
//!
//! Candidates are "bin <= b" for every feature and bin. The order is total and independent of
//! where the counts came from: higher gain first (`f64::total_cmp`), then lower feature, then
//! lower bin. NaN gains are rejected, never compared.

use crate::{HistogramLayout, Impurity, NodeHistogram, ValidTreeParams};

#[derive(Debug, Clone, PartialEq)]
pub struct SplitCandidate {
    pub feature: usize,
    pub threshold_bin: u8,
    pub gain: f64,
    pub left_counts: Vec<u64>,
    pub right_counts: Vec<u64>,
}

/// Gain of splitting `parent` into `left` and `right` (Spark's InformationGainStats formula).
pub fn information_gain(impurity: Impurity, parent: &[u64], left: &[u64], right: &[u64]) -> f64 {
    let (n, nl, nr) = (sum(parent), sum(left), sum(right));
    let n_f = n as f64;
    impurity.of(parent, n) - (nl as f64 / n_f) * impurity.of(left, nl) - (nr as f64 / n_f) * impurity.of(right, nr)
}

fn sum(counts: &[u64]) -> u64 {
    counts.iter().sum()
}

/// The best valid split of a node on one of `features` (ascending), or `None` when no split
/// has positive gain that meets `min_info_gain` with `min_instances_per_node` rows on each side.
pub fn best_split(
    hist: &NodeHistogram,
    layout: &HistogramLayout,
    parent_counts: &[u64],
    params: &ValidTreeParams,
    features: &[usize],
) -> Option<SplitCandidate> {
    let classes = layout.num_classes();
    let mut best: Option<SplitCandidate> = None;
    let mut left = vec![0u64; classes];
    let mut right = vec![0u64; classes];
    for &feature in features {
        let start = layout.feature_start(feature);
        left.iter_mut().for_each(|c| *c = 0);
        // The last bin cannot be a threshold: everything would go left.
        for bin in 0..layout.num_bins(feature).saturating_sub(1) {
            for class in 0..classes {
                left[class] += hist.counts[start + bin * classes + class];
                right[class] = parent_counts[class] - left[class];
            }
            let (nl, nr) = (sum(&left), sum(&right));
            if nl < params.min_instances_per_node || nr < params.min_instances_per_node {
                continue;
            }
            let gain = information_gain(params.impurity, parent_counts, &left, &right);
            if gain.is_nan() || gain <= 0.0 || gain < params.min_info_gain {
                continue;
            }
            if best.as_ref().is_none_or(|b| gain.total_cmp(&b.gain).is_gt()) {
                best = Some(SplitCandidate {
                    feature,
                    threshold_bin: bin as u8,
                    gain,
                    left_counts: left.clone(),
                    right_counts: right.clone(),
                });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Lcg, edges_of};
    use crate::{BinEdges, BinnedPartition, FeatureBins, NodeId, TreeParams};

    /// Brute force on raw rows: every feature, every threshold, counts by scanning, same order.
    fn brute_force(columns: &[Vec<f64>], labels: &[u8], edges: &BinEdges, classes: usize, p: &ValidTreeParams) -> Option<(usize, u8, f64)> {
        let mut parent = vec![0u64; classes];
        labels.iter().for_each(|&l| parent[l as usize] += 1);
        let mut best: Option<(usize, u8, f64)> = None;
        for (f, bins) in edges.features.iter().enumerate() {
            for (b, &t) in bins.thresholds.iter().enumerate() {
                let (mut l, mut r) = (vec![0u64; classes], vec![0u64; classes]);
                for (row, &label) in labels.iter().enumerate() {
                    if columns[f][row] <= t { l[label as usize] += 1 } else { r[label as usize] += 1 }
                }
                if sum(&l) < p.min_instances_per_node || sum(&r) < p.min_instances_per_node {
                    continue;
                }
                let g = information_gain(p.impurity, &parent, &l, &r);
                if g > 0.0 && g >= p.min_info_gain && best.is_none_or(|(_, _, bg)| g > bg) {
                    best = Some((f, b as u8, g));
                }
            }
        }
        best
    }

    #[test]
    fn histogram_search_equals_brute_force() {
        let mut rng = Lcg(42);
        for case in 0..200 {
            let (rows, features, classes) = (1 + rng.next(60) as usize, 1 + rng.next(4) as usize, 2 + rng.next(3) as usize);
            let columns: Vec<Vec<f64>> = (0..features).map(|_| (0..rows).map(|_| rng.next(12) as f64 - 3.0).collect()).collect();
            let labels: Vec<u8> = (0..rows).map(|_| rng.next(classes as u64) as u8).collect();
            let max_bins = 2 + rng.next(10) as u32;
            let edges = edges_of(&columns, max_bins);
            let impurity = if case % 2 == 0 { Impurity::Gini } else { Impurity::Entropy };
            let params = TreeParams { impurity, min_instances_per_node: 1 + rng.next(3), ..TreeParams::default() }.check().expect("valid");
            let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
            let part = BinnedPartition::from_columns(&refs, labels.clone(), &edges, classes).expect("valid");
            let layout = HistogramLayout::new(&edges, classes);
            let mut hist = vec![NodeHistogram::zeros(&layout)];
            part.add_histograms(&[NodeId::ROOT], &layout, &mut hist);
            let parent = hist[0].class_counts(&layout);
            let found = best_split(&hist[0], &layout, &parent, &params, &(0..features).collect::<Vec<_>>())
                .map(|c| (c.feature, c.threshold_bin, c.gain));
            assert_eq!(found, brute_force(&columns, &labels, &edges, classes, &params), "case {case}");
        }
    }

    #[test]
    fn ties_go_to_lower_feature_then_lower_bin() {
        // Two identical features: the split must be on feature 0.
        let edges = BinEdges {
            features: vec![
                FeatureBins { name: "a".into(), thresholds: vec![0.5] },
                FeatureBins { name: "b".into(), thresholds: vec![0.5] },
            ],
        };
        let x = [0.0, 0.0, 1.0, 1.0];
        let part = BinnedPartition::from_columns(&[&x, &x], vec![0, 0, 1, 1], &edges, 2).expect("valid");
        let layout = HistogramLayout::new(&edges, 2);
        let mut hist = vec![NodeHistogram::zeros(&layout)];
        part.add_histograms(&[NodeId::ROOT], &layout, &mut hist);
        let params = TreeParams::default().check().expect("valid");
        let best = best_split(&hist[0], &layout, &[2, 2], &params, &[0, 1]).expect("a split");
        assert_eq!((best.feature, best.threshold_bin, best.gain), (0, 0, 0.5));
    }
}

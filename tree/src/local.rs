//! The in-process source of histograms: the same partitions an executor would hold, summed
//! here. `canopy-driver train --in-process` and the tests use it as the reference model.

use crate::partition::SplitLog;
use crate::{BinnedPartition, HistogramLayout, NodeHistogram, NodeId, SplitDecision, StatsSource, TreeError};

pub struct LocalStats {
    partitions: Vec<BinnedPartition>,
    layout: HistogramLayout,
    log: SplitLog,
}

impl LocalStats {
    pub fn new(partitions: Vec<BinnedPartition>, layout: HistogramLayout) -> Self {
        LocalStats { partitions, layout, log: SplitLog::default() }
    }
}

impl StatsSource for LocalStats {
    type Error = TreeError;

    fn histograms(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeHistogram>, TreeError> {
        let mut out = vec![NodeHistogram::zeros(&self.layout); nodes.len()];
        for partition in &self.partitions {
            partition.add_histograms(nodes, &self.layout, &mut out);
        }
        Ok(out)
    }

    fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<(), TreeError> {
        let new = self.log.append(first_index, decisions)?;
        for partition in &mut self.partitions {
            partition.apply_splits(new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::information_gain;
    use crate::testing::{Lcg, edges_of};
    use crate::{BinEdges, Impurity, Tree, TreeParams, ValidTreeParams, grow_tree};

    struct Data {
        columns: Vec<Vec<f64>>,
        labels: Vec<u8>,
        edges: BinEdges,
    }

    fn data(rows: usize, seed: u64) -> Data {
        let mut rng = Lcg(seed);
        let columns: Vec<Vec<f64>> = (0..4).map(|f| (0..rows).map(|_| rng.next(20 + 30 * f) as f64).collect()).collect();
        // A label that depends on the features, with noise, so the tree has something to find.
        let labels = (0..rows)
            .map(|r| {
                let signal = (columns[0][r] > 9.0) as u8 + (columns[2][r] > 40.0) as u8;
                if rng.next(10) == 0 { rng.next(3) as u8 } else { signal }
            })
            .collect();
        let edges = edges_of(&columns, 8);
        Data { columns, labels, edges }
    }

    /// Trains with the rows dealt round-robin into `parts` partitions.
    fn train(d: &Data, parts: usize, params: &ValidTreeParams) -> Tree {
        let partitions = (0..parts)
            .map(|p| {
                let rows: Vec<usize> = (p..d.labels.len()).step_by(parts).collect();
                let cols: Vec<Vec<f64>> = d.columns.iter().map(|c| rows.iter().map(|&r| c[r]).collect()).collect();
                let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
                BinnedPartition::from_columns(&refs, rows.iter().map(|&r| d.labels[r]).collect(), &d.edges, 3).expect("valid")
            })
            .collect();
        let mut source = LocalStats::new(partitions, HistogramLayout::new(&d.edges, 3));
        grow_tree(&mut source, &d.edges, 3, params, |_| {}).expect("grows").0
    }

    /// The textbook recursive builder on raw rows, for comparison.
    fn naive(d: &Data, rows: &[usize], depth: u32, p: &ValidTreeParams, out: &mut Vec<String>) {
        let mut counts = vec![0u64; 3];
        rows.iter().for_each(|&r| counts[d.labels[r] as usize] += 1);
        let impure = counts.iter().filter(|&&c| c > 0).count() > 1;
        let mut best: Option<(f64, usize, usize)> = None;
        if depth < p.max_depth && impure && rows.len() as u64 >= 2 * p.min_instances_per_node {
            for (f, bins) in d.edges.features.iter().enumerate() {
                for (b, &t) in bins.thresholds.iter().enumerate() {
                    let (mut l, mut r) = (vec![0u64; 3], vec![0u64; 3]);
                    for &row in rows {
                        if d.columns[f][row] <= t { l[d.labels[row] as usize] += 1 } else { r[d.labels[row] as usize] += 1 }
                    }
                    let (nl, nr): (u64, u64) = (l.iter().sum(), r.iter().sum());
                    if nl < p.min_instances_per_node || nr < p.min_instances_per_node {
                        continue;
                    }
                    let g = information_gain(p.impurity, &counts, &l, &r);
                    if g > 0.0 && best.is_none_or(|(bg, _, _)| g > bg) {
                        best = Some((g, f, b));
                    }
                }
            }
        }
        match best {
            None => out.push(format!("{depth} leaf {counts:?}")),
            Some((_, f, b)) => {
                let t = d.edges.features[f].thresholds[b];
                out.push(format!("{depth} f{f}<={t} {counts:?}"));
                let (l, r): (Vec<usize>, Vec<usize>) = rows.iter().partition(|&&row| d.columns[f][row] <= t);
                naive(d, &l, depth + 1, p, out);
                naive(d, &r, depth + 1, p, out);
            }
        }
    }

    fn preorder(t: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![NodeId::ROOT];
        while let Some(id) = stack.pop() {
            let n = &t.nodes[id.index()];
            match &n.split {
                None => out.push(format!("{} leaf {:?}", n.depth, n.class_counts)),
                Some(s) => {
                    out.push(format!("{} f{}<={} {:?}", n.depth, s.feature, s.threshold, n.class_counts));
                    stack.push(s.right);
                    stack.push(s.left);
                }
            }
        }
        out
    }

    #[test]
    fn same_tree_for_any_partitioning_and_equal_to_naive_builder() {
        for (seed, impurity, min_inst) in [(1, Impurity::Gini, 1), (2, Impurity::Entropy, 1), (3, Impurity::Gini, 25)] {
            let d = data(3000, seed);
            let params =
                TreeParams { max_depth: 6, impurity, min_instances_per_node: min_inst, ..TreeParams::default() }.check().expect("valid");
            let one = train(&d, 1, &params);
            for parts in [2, 3, 4, 7] {
                assert_eq!(train(&d, parts, &params), one, "seed {seed}, {parts} partitions");
            }
            let mut expected = Vec::new();
            naive(&d, &(0..d.labels.len()).collect::<Vec<_>>(), 0, &params, &mut expected);
            assert_eq!(preorder(&one), expected, "seed {seed}");
            assert!(one.num_leaves() > 4, "a real tree, not a stump");
        }
    }

    #[test]
    fn tiny_memory_budget_gives_the_same_tree() {
        let d = data(2000, 9);
        let params = TreeParams { max_depth: 5, ..TreeParams::default() }.check().expect("valid");
        // 1 MiB fits many nodes here; the result must not depend on batching.
        let small = TreeParams { max_depth: 5, max_memory_mb: 1, ..TreeParams::default() }.check().expect("valid");
        assert_eq!(train(&d, 3, &params), train(&d, 3, &small));
    }

    #[test]
    fn empty_training_set_is_an_error() {
        let d = data(0, 1);
        let params = TreeParams::default().check().expect("valid");
        let partitions = vec![BinnedPartition::from_binned(vec![Vec::new(); 4], Vec::new())];
        let mut source = LocalStats::new(partitions, HistogramLayout::new(&d.edges, 3));
        assert_eq!(grow_tree(&mut source, &d.edges, 3, &params, |_| {}).map(|_| ()), Err(TreeError::EmptyTrainingSet));
    }
}

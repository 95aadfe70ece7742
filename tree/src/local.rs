//! Partitions held in memory and the statistics computed over them: the in-process learner's
//! source of histograms, and what an executor's job holds. Both run this one code path, so the
//! distributed model cannot drift from the in-process one.
//!
//! Partitions are keyed by [`PartitionId`]. Requests name the partitions they cover, so a
//! partition that moved between executors is counted exactly once.

use std::collections::BTreeMap;
use std::fmt;

use crate::partition::SplitLog;
use crate::sampling::RowSampler;
use crate::{
    BinnedPartition, ConfusionMatrix, ForestPlan, HistogramLayout, Model, NodeHistogram, NodeId, SplitDecision, StatsSource, TreeError,
};

/// Whether a partition holds training or test rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Train,
    Test,
}

/// A partition of the split data set: its role and its number (fixed by the seed, not by the
/// executor count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId {
    pub role: Role,
    pub index: u32,
}

impl PartitionId {
    pub fn train(index: u32) -> Self {
        PartitionId { role: Role::Train, index }
    }
    pub fn test(index: u32) -> Self {
        PartitionId { role: Role::Test, index }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Train => write!(f, "train/{}", self.index),
            Role::Test => write!(f, "test/{}", self.index),
        }
    }
}

pub struct LocalStats {
    partitions: BTreeMap<PartitionId, BinnedPartition>,
    layout: HistogramLayout,
    log: SplitLog,
    /// A forest's trees and row sampler; `None`: one tree on every row.
    forest: Option<(u32, RowSampler)>,
}

impl LocalStats {
    pub fn new(layout: HistogramLayout) -> Self {
        LocalStats { partitions: BTreeMap::new(), layout, log: SplitLog::default(), forest: None }
    }

    /// Statistics for `plan`: a forest's training partitions are sampled per tree as they
    /// arrive (which needs their row numbers).
    pub fn for_plan(layout: HistogramLayout, plan: &ForestPlan) -> Self {
        let forest = plan.sampler.clone().map(|sampler| (plan.num_trees, sampler));
        LocalStats { log: SplitLog::new(plan.num_trees), forest, ..Self::new(layout) }
    }

    /// Holds every given partition (the in-process learner).
    pub fn with_partitions(layout: HistogramLayout, partitions: impl IntoIterator<Item = (PartitionId, BinnedPartition)>) -> Self {
        let mut stats = Self::new(layout);
        stats.partitions.extend(partitions);
        stats
    }

    /// A forest's number of trees; `None` for one tree on every row.
    pub fn forest_trees(&self) -> Option<u32> {
        self.forest.as_ref().map(|(num_trees, _)| *num_trees)
    }

    pub fn layout(&self) -> &HistogramLayout {
        &self.layout
    }

    /// Adds a partition. A training partition that arrives mid-run replays the split log, so its
    /// rows reach the same nodes as everyone else's. Holding it already is an error: a second
    /// copy would be counted twice.
    pub fn insert(&mut self, id: PartitionId, mut partition: BinnedPartition) -> Result<(), TreeError> {
        if self.partitions.contains_key(&id) {
            return Err(TreeError::DuplicatePartition { partition: id.to_string() });
        }
        if id.role == Role::Train {
            if let Some((num_trees, sampler)) = &self.forest {
                partition.draw_samples(sampler, *num_trees)?;
            }
            partition.apply_splits(self.log.decisions())?;
        }
        self.partitions.insert(id, partition);
        Ok(())
    }

    /// Drops a partition; `None` when it was not held.
    pub fn remove(&mut self, id: PartitionId) -> Option<BinnedPartition> {
        self.partitions.remove(&id)
    }

    pub fn holds(&self, id: PartitionId) -> bool {
        self.partitions.contains_key(&id)
    }

    /// Rows held, both roles.
    pub fn rows(&self) -> u64 {
        self.partitions.values().map(|p| p.num_rows() as u64).sum()
    }

    /// The partitions named, each held and of `role`; the first that is not is the error.
    fn named<'a>(&'a self, ids: &'a [PartitionId], role: Role) -> impl Iterator<Item = Result<&'a BinnedPartition, TreeError>> + 'a {
        ids.iter().map(move |id| match self.partitions.get(id) {
            Some(_) if id.role != role => Err(TreeError::WrongPartitionRole { partition: id.to_string() }),
            Some(p) => Ok(p),
            None => Err(TreeError::PartitionNotHeld { partition: id.to_string() }),
        })
    }

    /// Histograms of `nodes` summed over the named training partitions.
    pub fn histograms_of(&self, ids: &[PartitionId], nodes: &[NodeId]) -> Result<Vec<NodeHistogram>, TreeError> {
        if let Some(node) = nodes.iter().find(|n| !self.log.is_leaf(**n)) {
            return Err(TreeError::NotALeaf { node: node.0 });
        }
        let held = self.named(ids, Role::Train).collect::<Result<Vec<_>, _>>()?;
        let mut out = vec![NodeHistogram::zeros(&self.layout); nodes.len()];
        for partition in held {
            partition.add_histograms(nodes, &self.layout, &mut out);
        }
        Ok(out)
    }

    /// Confusion matrix of `model` over the named test partitions.
    pub fn confusion_of(&self, ids: &[PartitionId], model: Model<'_>) -> Result<ConfusionMatrix, TreeError> {
        let held = self.named(ids, Role::Test).collect::<Result<Vec<_>, _>>()?;
        let mut cm = ConfusionMatrix::new(self.layout.num_classes());
        for partition in held {
            partition.add_confusion(model, &mut cm);
        }
        Ok(cm)
    }

    /// Every held partition of `role`, in id order.
    pub fn ids_of(&self, role: Role) -> Vec<PartitionId> {
        self.partitions.keys().filter(|id| id.role == role).copied().collect()
    }

    /// Checks that every named partition is held (and of `role`) without computing anything.
    pub fn check_held(&self, ids: &[PartitionId], role: Role) -> Result<(), TreeError> {
        self.named(ids, role).try_for_each(|p| p.map(|_| ()))
    }
}

impl StatsSource for LocalStats {
    type Error = TreeError;

    fn histograms(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeHistogram>, TreeError> {
        let ids = self.ids_of(Role::Train);
        self.histograms_of(&ids, nodes)
    }

    fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<(), TreeError> {
        let new = self.log.append(first_index, decisions, &self.layout)?;
        for (id, partition) in &mut self.partitions {
            if id.role == Role::Train {
                partition.apply_splits(new)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::information_gain;
    use crate::testing::{Lcg, edges_of};
    use crate::{BinEdges, ForestParams, Impurity, Tree, TreeParams, ValidTreeParams, grow_forest, grow_tree};

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

    /// The rows dealt round-robin into `parts` training partitions, each row numbered from 1 in
    /// `d`'s order.
    fn dealt(d: &Data, parts: usize) -> Vec<(PartitionId, BinnedPartition)> {
        (0..parts)
            .map(|p| {
                let rows: Vec<usize> = (p..d.labels.len()).step_by(parts).collect();
                let cols: Vec<Vec<f64>> = d.columns.iter().map(|c| rows.iter().map(|&r| c[r]).collect()).collect();
                let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
                let partition = BinnedPartition::from_columns(&refs, rows.iter().map(|&r| d.labels[r]).collect(), &d.edges, 3)
                    .and_then(|b| b.with_row_numbers(rows.iter().map(|&r| r as u64 + 1).collect()))
                    .expect("valid");
                (PartitionId::train(p as u32), partition)
            })
            .collect()
    }

    /// Trains with the rows dealt round-robin into `parts` partitions.
    fn train(d: &Data, parts: usize, params: &ValidTreeParams) -> Tree {
        let mut source = LocalStats::with_partitions(HistogramLayout::new(&d.edges, 3), dealt(d, parts));
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

    /// Grows a forest with the rows dealt round-robin into `parts` partitions.
    fn train_forest(d: &Data, parts: usize, params: &ValidTreeParams, forest: &ForestParams) -> Vec<Tree> {
        let plan = forest.plan(11, d.edges.num_features()).expect("valid");
        let mut source = LocalStats::for_plan(HistogramLayout::new(&d.edges, 3), &plan);
        for (id, partition) in dealt(d, parts) {
            source.insert(id, partition).expect("new");
        }
        grow_forest(&mut source, &d.edges, 3, params, &plan, |_| {}).expect("grows").0
    }

    #[test]
    fn same_forest_for_any_partitioning() {
        let d = data(3000, 5);
        let params = TreeParams { max_depth: 5, ..TreeParams::default() }.check().expect("valid");
        for forest in [
            ForestParams { num_trees: 6, ..ForestParams::default() },
            ForestParams { num_trees: 3, subsampling_rate: 0.5, bootstrap: false, ..ForestParams::default() },
        ] {
            let one = train_forest(&d, 1, &params, &forest);
            assert_eq!(one.len(), forest.num_trees as usize);
            assert!(one.windows(2).all(|w| w[0] != w[1]), "each tree sees its own sample");
            for parts in [2, 3, 7] {
                assert_eq!(train_forest(&d, parts, &params, &forest), one, "{parts} partitions, {forest:?}");
            }
        }
    }

    #[test]
    fn each_forest_tree_is_the_exact_tree_of_its_weighted_sample() {
        // With every feature at every node, tree t must equal the textbook builder run on the
        // rows repeated as often as their bootstrap weight in tree t.
        let d = data(1500, 6);
        let params = TreeParams { max_depth: 4, ..TreeParams::default() }.check().expect("valid");
        let forest = ForestParams { num_trees: 3, feature_subset_strategy: crate::FeatureSubset::All, ..ForestParams::default() };
        let trees = train_forest(&d, 3, &params, &forest);
        let sampler = forest.plan(11, 4).expect("valid").sampler.expect("bootstrap");
        for (t, tree) in trees.iter().enumerate() {
            let repeated: Vec<usize> =
                (0..d.labels.len()).flat_map(|r| std::iter::repeat_n(r, sampler.weight(t as u32, r as u64 + 1) as usize)).collect();
            let mut expected = Vec::new();
            naive(&d, &repeated, 0, &params, &mut expected);
            assert_eq!(preorder(tree), expected, "tree {t}");
        }
    }

    #[test]
    fn nodes_split_only_on_their_drawn_features() {
        let d = data(2000, 7);
        let params = TreeParams { max_depth: 4, ..TreeParams::default() }.check().expect("valid");
        let forest = ForestParams { num_trees: 4, feature_subset_strategy: crate::FeatureSubset::Count(1), ..ForestParams::default() };
        let mut features_used = std::collections::BTreeSet::new();
        for (t, tree) in train_forest(&d, 2, &params, &forest).iter().enumerate() {
            for node in &tree.nodes {
                if let Some(split) = &node.split {
                    assert_eq!(
                        vec![split.feature as usize],
                        crate::node_features(11, t as u32, node.id, 4, 1),
                        "tree {t} node {}",
                        node.id
                    );
                    features_used.insert(split.feature);
                }
            }
        }
        assert!(features_used.len() > 1, "drawn subsets differ between nodes");
    }

    #[test]
    fn forest_partitions_need_row_numbers() {
        let d = data(10, 1);
        let plan = ForestParams::default().plan(1, 4).expect("valid");
        let mut source = LocalStats::for_plan(HistogramLayout::new(&d.edges, 3), &plan);
        let refs: Vec<&[f64]> = d.columns.iter().map(Vec::as_slice).collect();
        let partition = BinnedPartition::from_columns(&refs, d.labels.clone(), &d.edges, 3).expect("valid");
        assert_eq!(source.insert(PartitionId::train(0), partition.clone()), Err(TreeError::MissingRowNumbers));
        assert_eq!(source.insert(PartitionId::test(0), partition), Ok(()), "test rows are not sampled");
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
        let partitions = [(PartitionId::train(0), BinnedPartition::from_binned(vec![Vec::new(); 4], Vec::new()))];
        let mut source = LocalStats::with_partitions(HistogramLayout::new(&d.edges, 3), partitions);
        assert_eq!(grow_tree(&mut source, &d.edges, 3, &params, |_| {}).map(|_| ()), Err(TreeError::EmptyTrainingSet));
    }

    #[test]
    fn requests_name_held_partitions_of_the_right_role() {
        let d = data(100, 4);
        let layout = HistogramLayout::new(&d.edges, 3);
        let refs: Vec<&[f64]> = d.columns.iter().map(Vec::as_slice).collect();
        let part = || BinnedPartition::from_columns(&refs, d.labels.clone(), &d.edges, 3).expect("valid");
        let mut stats = LocalStats::new(layout);
        stats.insert(PartitionId::train(3), part()).expect("new");
        stats.insert(PartitionId::test(3), part()).expect("new");
        assert_eq!(stats.insert(PartitionId::train(3), part()), Err(TreeError::DuplicatePartition { partition: "train/3".into() }));
        assert_eq!(
            stats.histograms_of(&[PartitionId::train(4)], &[NodeId::ROOT]),
            Err(TreeError::PartitionNotHeld { partition: "train/4".into() })
        );
        assert_eq!(
            stats.histograms_of(&[PartitionId::test(3)], &[NodeId::ROOT]),
            Err(TreeError::WrongPartitionRole { partition: "test/3".into() })
        );
        let one = stats.histograms_of(&[PartitionId::train(3)], &[NodeId::ROOT]).expect("held");
        assert_eq!(one[0].counts.iter().sum::<u64>(), 100 * 4, "each row once per feature");
        assert!(stats.remove(PartitionId::train(3)).is_some());
        assert_eq!(stats.rows(), 100);
    }
}

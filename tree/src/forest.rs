//! Random forests as Spark MLlib's RandomForestClassifier defines them: parameters and their
//! defaults, the plan a run follows (how many trees, how many features per node, how rows are
//! sampled), and the trained forest's prediction.
//!
//! A forest grows with the single tree's grower (see `grower::grow_forest`); a single tree is a
//! forest of one tree that sees every row and every feature.

use serde::{Deserialize, Serialize};

use crate::sampling::{FeatureSubset, RowSampler};
use crate::{Node, Tree, TreeError};

/// Most trees in one forest: each tree holds a sample of every partition's rows, about five
/// bytes per sampled row, so this bounds an executor's memory per row.
pub const MAX_TREES: u32 = 1000;

/// Unchecked forest parameters, with Spark's defaults; see [`ForestParams::plan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForestParams {
    pub num_trees: u32,
    pub feature_subset_strategy: FeatureSubset,
    pub subsampling_rate: f64,
    pub bootstrap: bool,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams { num_trees: 20, feature_subset_strategy: FeatureSubset::Auto, subsampling_rate: 1.0, bootstrap: true }
    }
}

impl ForestParams {
    /// Checks the parameters and fixes what the run needs for `num_features` features.
    pub fn plan(&self, seed: u64, num_features: usize) -> Result<ForestPlan, TreeError> {
        if !(1..=MAX_TREES).contains(&self.num_trees) {
            return Err(TreeError::InvalidNumTrees { max: MAX_TREES, found: self.num_trees });
        }
        let sampler = RowSampler::new(seed, self.subsampling_rate, self.bootstrap)?;
        Ok(ForestPlan {
            num_trees: self.num_trees,
            features_per_node: self.feature_subset_strategy.features_per_node(num_features, self.num_trees as usize),
            seed,
            sampler: Some(sampler),
        })
    }
}

/// What growing needs: trees, features per node, and the row sampler (`None`: every row once).
#[derive(Debug, Clone, PartialEq)]
pub struct ForestPlan {
    pub num_trees: u32,
    pub features_per_node: usize,
    pub seed: u64,
    pub sampler: Option<RowSampler>,
}

impl ForestPlan {
    /// One tree on every row and every feature: the decision tree.
    pub fn single_tree(num_features: usize) -> Self {
        ForestPlan { num_trees: 1, features_per_node: num_features, seed: 0, sampler: None }
    }
}

/// The trained forest. Each tree's node ids are its own (its root is node 0). Serialized as
/// the list of its trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Forest {
    pub trees: Vec<Tree>,
}

impl Forest {
    /// Checks a forest that came from a file or the network.
    pub fn validate(&self, num_features: usize, num_classes: usize) -> Result<(), TreeError> {
        if self.trees.is_empty() || self.trees.len() > MAX_TREES as usize {
            return Err(TreeError::MalformedTree { detail: format!("a forest has 1 to {MAX_TREES} trees, found {}", self.trees.len()) });
        }
        for (t, tree) in self.trees.iter().enumerate() {
            let bad = |detail: String| TreeError::MalformedTree { detail: format!("tree {t}: {detail}") };
            if tree.num_features as usize != num_features || tree.num_classes as usize != num_classes {
                return Err(bad(format!(
                    "{} features and {} classes, expected {num_features} and {num_classes}",
                    tree.num_features, tree.num_classes
                )));
            }
            tree.validate().map_err(|e| bad(e.to_string()))?;
            // Leaves vote with their class distribution: counts of every class, summing to a
            // positive total that fits in u64.
            let mut leaves = tree.nodes.iter().filter(|n| n.split.is_none());
            let no_distribution = |n: &&Node| {
                n.class_counts.len() != num_classes
                    || matches!(n.class_counts.iter().try_fold(0u64, |a, &c| a.checked_add(c)), None | Some(0))
            };
            if let Some(node) = leaves.find(no_distribution) {
                return Err(bad(format!("node {} has no class distribution over {num_classes} classes", node.id)));
            }
        }
        Ok(())
    }

    /// Predicts from raw feature values.
    pub fn predict(&self, row: &[f64]) -> u32 {
        self.vote(|tree| tree.leaf(row))
    }

    /// Predicts from binned values; `bin(feature)` reads the row.
    pub fn predict_binned(&self, bin: &dyn Fn(usize) -> u8) -> u32 {
        self.vote(|tree| tree.leaf_binned(bin))
    }

    /// Spark's rule: the sum over trees of each reached leaf's class distribution (counts
    /// divided by their total); the highest sum wins, ties to the lowest class. Trees are summed
    /// in order, so the floating-point sums are the same everywhere.
    fn vote<'a>(&'a self, leaf: impl Fn(&'a Tree) -> &'a Node) -> u32 {
        let classes = self.trees.first().map_or(0, |t| t.num_classes as usize);
        let mut votes = vec![0.0f64; classes];
        for tree in &self.trees {
            let node = leaf(tree);
            let total: f64 = node.class_counts.iter().map(|&c| c as f64).sum();
            if total > 0.0 {
                votes.iter_mut().zip(&node.class_counts).for_each(|(v, &c)| *v += c as f64 / total);
            }
        }
        let mut best = 0;
        for (class, &v) in votes.iter().enumerate() {
            if v > votes[best] {
                best = class;
            }
        }
        best as u32
    }

    pub fn num_nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use crate::model::Split;

    fn stump(left: Vec<u64>, right: Vec<u64>) -> Tree {
        let total: Vec<u64> = left.iter().zip(&right).map(|(a, b)| a + b).collect();
        let mut root = Node::new(NodeId(0), 0, total, 0.5);
        root.split = Some(Split { feature: 0, threshold: 0.5, threshold_bin: 0, gain: 0.1, left: NodeId(1), right: NodeId(2) });
        Tree { num_features: 1, num_classes: 3, nodes: vec![root, Node::new(NodeId(1), 1, left, 0.0), Node::new(NodeId(2), 1, right, 0.0)] }
    }

    #[test]
    fn votes_sum_leaf_distributions_not_majorities() {
        // Left leaves: tree a says class 0 by 0.6, tree b and c lean to class 1 by 0.5 and 0.45.
        // Majority voting would pick 1 (two trees); distributions sum to 0: 0.6+0.4+0.45 = 1.45,
        // 1: 0.4+0.5+0.45 = 1.35, 2: 0+0.1+0.1 = 0.2.
        let forest = Forest {
            trees: vec![stump(vec![6, 4, 0], vec![0, 0, 9]), stump(vec![4, 5, 1], vec![0, 0, 9]), stump(vec![9, 9, 2], vec![0, 0, 9])],
        };
        assert_eq!(forest.predict(&[0.0]), 0);
        assert_eq!(forest.predict_binned(&|_| 0), 0);
        assert_eq!(forest.predict(&[1.0]), 2);
        assert_eq!(forest.validate(1, 3), Ok(()));
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        let forest = Forest { trees: vec![stump(vec![1, 1, 0], vec![0, 0, 1]), stump(vec![0, 2, 2], vec![0, 0, 1])] };
        // Class 0: 0.5, class 1: 0.5 + 0.5 = 1.0, class 2: 0.5: class 1 wins outright.
        assert_eq!(forest.predict(&[0.0]), 1);
        let forest = Forest { trees: vec![stump(vec![2, 2, 0], vec![0, 0, 1])] };
        assert_eq!(forest.predict(&[0.0]), 0);
    }

    #[test]
    fn bad_forests_are_refused() {
        assert!(matches!(Forest { trees: vec![] }.validate(1, 3), Err(TreeError::MalformedTree { .. })));
        let forest = Forest { trees: vec![stump(vec![1, 1, 0], vec![0, 0, 1])] };
        assert!(matches!(forest.validate(2, 3), Err(TreeError::MalformedTree { .. })));
        let mut empty_leaf = stump(vec![1, 1, 0], vec![0, 0, 1]);
        empty_leaf.nodes[2].class_counts = vec![0, 0, 0];
        assert_eq!(
            Forest { trees: vec![empty_leaf] }.validate(1, 3),
            Err(TreeError::MalformedTree { detail: "tree 0: node 2 has no class distribution over 3 classes".into() })
        );
    }

    #[test]
    fn params_default_to_sparks_and_are_checked() {
        let plan = ForestParams::default().plan(7, 9).expect("valid");
        assert_eq!((plan.num_trees, plan.features_per_node), (20, 3));
        let bad = ForestParams { num_trees: 0, ..ForestParams::default() };
        assert_eq!(bad.plan(7, 9), Err(TreeError::InvalidNumTrees { max: MAX_TREES, found: 0 }));
        let bad = ForestParams { subsampling_rate: 0.0, ..ForestParams::default() };
        assert_eq!(bad.plan(7, 9), Err(TreeError::InvalidSubsamplingRate { found: 0.0 }));
        let toml_like: ForestParams = serde_json::from_str(r#"{"num_trees": 5, "feature_subset_strategy": "onethird"}"#).expect("parses");
        assert_eq!((toml_like.num_trees, toml_like.feature_subset_strategy), (5, FeatureSubset::OneThird));
        assert!(serde_json::from_str::<ForestParams>(r#"{"feature_subset_strategy": "half"}"#).is_err());
    }
}

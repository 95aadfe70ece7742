//! The canopy.v1 contract: generated gRPC code, the partition format (`partition`), the
//! executor's identity, and the conversions between wire messages and the tree crate's types.

pub mod partition;

use std::fmt;

use canopy_tree::forest::MAX_TREES;
use canopy_tree::model::Split;
use canopy_tree::{
    BinEdges, FeatureBins, FeatureSubset, Forest, ForestParams, ForestPlan, Impurity, Node, NodeId, PartitionId, Role, SplitDecision, Tree,
};
use thiserror::Error;

#[allow(clippy::all, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("canopy.v1");
}

/// Bumped on any incompatible change of the contract; checked at the first contact.
pub const PROTOCOL_VERSION: u32 = 4;

// Limits: every request an executor takes is checked against these before it allocates
// (docs/security.md lists them). Both sides use them: the driver sizes its requests to fit.

/// Largest answer the driver decodes (tonic's limit; its default is 4 MiB): a deep tree's
/// histograms need more.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Largest request a server decodes (tonic's default). Decoding can take ~25 times a message's
/// size (a repeated empty message costs 2 bytes on the wire, ~50 in memory), so requests, which
/// are small, stay at this.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Largest Flight message of rows an executor decodes: four times the chunks the driver sends.
pub const MAX_FLIGHT_MESSAGE_BYTES: usize = 4 * FLIGHT_CHUNK_BYTES;
/// Most features of a job (each one a column of every partition).
pub const MAX_FEATURES: usize = 1024;
/// Longest feature name or job id, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Bins are stored as one byte.
pub const MAX_BINS: usize = 256;
/// Labels are stored as one byte.
pub const MAX_CLASSES: usize = 255;
/// One node's histogram (every feature's bins times the classes, 8 bytes a count) at most this
/// big, so that one node always fits in an answer.
pub const MAX_NODE_HISTOGRAM_BYTES: usize = 16 << 20;
/// A histogram answer at most this big; the driver asks for fewer nodes at a time to fit.
pub const MAX_HISTOGRAM_ANSWER_BYTES: usize = 32 << 20;
/// Most partitions of a run (each one a Flight stream per executor holding it).
pub const MAX_PARTITIONS: usize = 4096;

/// How many nodes' histograms fit in one answer.
pub fn histogram_nodes_per_request(bytes_per_node: usize) -> usize {
    (MAX_HISTOGRAM_ANSWER_BYTES / bytes_per_node.max(1)).max(1)
}
/// Target size of one Arrow Flight message of rows.
pub const FLIGHT_CHUNK_BYTES: usize = 2 << 20;

/// An executor's name, unique within a driver's registry: the key of every executor record
/// (never its position in a list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecutorId(pub String);

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum WireError {
    #[error("field {field} is missing or unspecified")]
    Missing { field: &'static str },
    #[error("field {field} has {found} entries, at most {max} are allowed")]
    TooMany { field: &'static str, found: usize, max: usize },
    #[error("field {field} = {value} does not fit in {target}")]
    OutOfRange { field: &'static str, value: u64, target: &'static str },
    #[error("invalid tree: {0}")]
    Tree(#[from] canopy_tree::TreeError),
}

fn narrow_u8(field: &'static str, value: u32) -> Result<u8, WireError> {
    u8::try_from(value).map_err(|_| WireError::OutOfRange { field, value: u64::from(value), target: "u8" })
}

impl From<&SplitDecision> for v1::SplitDecision {
    fn from(d: &SplitDecision) -> Self {
        v1::SplitDecision {
            node: d.node.0,
            feature: d.feature,
            threshold_bin: u32::from(d.threshold_bin),
            left: d.left.0,
            right: d.right.0,
        }
    }
}

impl TryFrom<&v1::SplitDecision> for SplitDecision {
    type Error = WireError;
    fn try_from(d: &v1::SplitDecision) -> Result<Self, WireError> {
        Ok(SplitDecision {
            node: NodeId(d.node),
            feature: d.feature,
            threshold_bin: narrow_u8("threshold_bin", d.threshold_bin)?,
            left: NodeId(d.left),
            right: NodeId(d.right),
        })
    }
}

impl From<PartitionId> for v1::PartitionRef {
    fn from(p: PartitionId) -> Self {
        let role = match p.role {
            Role::Train => v1::PartitionRole::Train,
            Role::Test => v1::PartitionRole::Test,
        };
        v1::PartitionRef { role: role as i32, index: p.index }
    }
}

impl TryFrom<&v1::PartitionRef> for PartitionId {
    type Error = WireError;
    fn try_from(p: &v1::PartitionRef) -> Result<Self, WireError> {
        let role = match v1::PartitionRole::try_from(p.role) {
            Ok(v1::PartitionRole::Train) => Role::Train,
            Ok(v1::PartitionRole::Test) => Role::Test,
            _ => {
                return Err(WireError::Missing { field: "partition.role" });
            }
        };
        if p.index as usize >= MAX_PARTITIONS {
            return Err(WireError::OutOfRange {
                field: "partition.index",
                value: u64::from(p.index),
                target: "a partition index (below MAX_PARTITIONS, 4096)",
            });
        }
        Ok(PartitionId { role, index: p.index })
    }
}

pub fn partitions_to_wire(ids: &[PartitionId]) -> Vec<v1::PartitionRef> {
    ids.iter().map(|&p| p.into()).collect()
}

pub fn partitions_from_wire(refs: &[v1::PartitionRef]) -> Result<Vec<PartitionId>, WireError> {
    if refs.len() > 2 * MAX_PARTITIONS {
        return Err(WireError::TooMany { field: "partitions", found: refs.len(), max: 2 * MAX_PARTITIONS });
    }
    refs.iter().map(PartitionId::try_from).collect()
}

impl From<Impurity> for v1::Impurity {
    fn from(i: Impurity) -> Self {
        match i {
            Impurity::Gini => v1::Impurity::Gini,
            Impurity::Entropy => v1::Impurity::Entropy,
        }
    }
}

/// The wire's impurity; unspecified or unknown values are refused, never read as gini.
pub fn impurity_from_wire(value: i32) -> Result<Impurity, WireError> {
    match v1::Impurity::try_from(value) {
        Ok(v1::Impurity::Gini) => Ok(Impurity::Gini),
        Ok(v1::Impurity::Entropy) => Ok(Impurity::Entropy),
        _ => Err(WireError::Missing { field: "impurity" }),
    }
}

pub fn edges_to_wire(edges: &BinEdges) -> Vec<v1::FeatureBins> {
    edges.features.iter().map(|f| v1::FeatureBins { name: f.name.clone(), thresholds: f.thresholds.clone() }).collect()
}

pub fn edges_from_wire(features: &[v1::FeatureBins]) -> BinEdges {
    BinEdges { features: features.iter().map(|f| FeatureBins { name: f.name.clone(), thresholds: f.thresholds.clone() }).collect() }
}

/// The routing part of a tree: what an executor needs to predict binned rows; with
/// `leaf_counts`, also the leaves' class counts (a forest sums their distributions).
pub fn tree_to_wire(tree: &Tree, leaf_counts: bool) -> Vec<v1::TreeNode> {
    tree.nodes
        .iter()
        .map(|n| v1::TreeNode {
            prediction: n.prediction,
            split: n.split.as_ref().map(|s| v1::NodeSplit {
                feature: s.feature,
                threshold_bin: u32::from(s.threshold_bin),
                left: s.left.0,
                right: s.right.0,
            }),
            class_counts: if leaf_counts && n.split.is_none() { n.class_counts.clone() } else { Vec::new() },
        })
        .collect()
}

/// Rebuilds a routing-only tree (no raw thresholds; class counts where sent) and checks its
/// shape.
pub fn tree_from_wire(nodes: &[v1::TreeNode], num_features: usize, num_classes: usize) -> Result<Tree, WireError> {
    let nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let split = n
                .split
                .as_ref()
                .map(|s| -> Result<Split, WireError> {
                    Ok(Split {
                        feature: s.feature,
                        threshold: f64::NAN,
                        threshold_bin: narrow_u8("threshold_bin", s.threshold_bin)?,
                        gain: 0.0,
                        left: NodeId(s.left),
                        right: NodeId(s.right),
                    })
                })
                .transpose()?;
            let id = u32::try_from(i).map_err(|_| WireError::OutOfRange { field: "nodes", value: i as u64, target: "u32" })?;
            if !n.class_counts.is_empty() && n.class_counts.len() != num_classes {
                return Err(WireError::TooMany { field: "class_counts", found: n.class_counts.len(), max: num_classes });
            }
            let class_counts = n.class_counts.clone();
            Ok(Node { id: NodeId(id), depth: 0, class_counts, impurity: 0.0, prediction: n.prediction, split })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    let tree = Tree {
        num_features: u32::try_from(num_features).unwrap_or(u32::MAX),
        num_classes: u32::try_from(num_classes).unwrap_or(u32::MAX),
        nodes,
    };
    tree.validate()?;
    Ok(tree)
}

pub fn forest_to_wire(forest: &Forest) -> Vec<v1::ForestTree> {
    forest.trees.iter().map(|t| v1::ForestTree { nodes: tree_to_wire(t, true) }).collect()
}

/// Rebuilds a forest for scoring and checks it: shapes, and a class distribution at every leaf.
pub fn forest_from_wire(trees: &[v1::ForestTree], num_features: usize, num_classes: usize) -> Result<Forest, WireError> {
    if trees.len() > MAX_TREES as usize {
        return Err(WireError::TooMany { field: "forest", found: trees.len(), max: MAX_TREES as usize });
    }
    let trees = trees.iter().map(|t| tree_from_wire(&t.nodes, num_features, num_classes)).collect::<Result<Vec<_>, _>>()?;
    let forest = Forest { trees };
    forest.validate(num_features, num_classes)?;
    Ok(forest)
}

/// A forest's sampling for BeginJob; `None` for a single tree on every row.
pub fn forest_plan_to_wire(plan: &ForestPlan) -> Option<v1::ForestSampling> {
    plan.sampler.as_ref().map(|sampler| v1::ForestSampling {
        num_trees: plan.num_trees,
        seed: sampler.seed(),
        subsampling_rate: sampler.rate(),
        bootstrap: sampler.bootstrap(),
    })
}

/// What an executor needs of a forest's plan: its trees and its row sampler, checked.
pub fn forest_plan_from_wire(sampling: &v1::ForestSampling, num_features: usize) -> Result<ForestPlan, WireError> {
    // The driver's own checks (`ForestParams::plan`); executors never draw feature subsets.
    let params = ForestParams {
        num_trees: sampling.num_trees,
        feature_subset_strategy: FeatureSubset::All,
        subsampling_rate: sampling.subsampling_rate,
        bootstrap: sampling.bootstrap,
    };
    Ok(params.plan(sampling.seed, num_features)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_bins_are_refused() {
        let wire = v1::SplitDecision { node: 0, feature: 0, threshold_bin: 300, left: 1, right: 2 };
        assert_eq!(SplitDecision::try_from(&wire), Err(WireError::OutOfRange { field: "threshold_bin", value: 300, target: "u8" }));
    }

    #[test]
    fn partitions_and_impurity_need_a_known_value() {
        let id = PartitionId::test(7);
        assert_eq!(PartitionId::try_from(&v1::PartitionRef::from(id)), Ok(id));
        assert_eq!(PartitionId::try_from(&v1::PartitionRef { role: 0, index: 1 }), Err(WireError::Missing { field: "partition.role" }));
        assert_eq!(impurity_from_wire(v1::Impurity::from(Impurity::Entropy) as i32), Ok(Impurity::Entropy));
        assert_eq!(impurity_from_wire(0), Err(WireError::Missing { field: "impurity" }));
    }

    #[test]
    fn routing_tree_round_trips() {
        let wire = vec![
            v1::TreeNode {
                prediction: 0,
                split: Some(v1::NodeSplit { feature: 1, threshold_bin: 3, left: 1, right: 2 }),
                class_counts: vec![],
            },
            v1::TreeNode { prediction: 0, split: None, class_counts: vec![3, 1] },
            v1::TreeNode { prediction: 1, split: None, class_counts: vec![1, 5] },
        ];
        let tree = tree_from_wire(&wire, 2, 2).expect("valid");
        assert_eq!(tree.predict_binned(|_| 4), 1);
        assert_eq!(tree_to_wire(&tree, true), wire);
        assert!(tree_to_wire(&tree, false).iter().all(|n| n.class_counts.is_empty()), "a single tree sends no counts");
        assert!(tree_from_wire(&wire[..1], 2, 2).is_err(), "children out of range");
        let forest = forest_from_wire(&[v1::ForestTree { nodes: wire.clone() }], 2, 2).expect("valid");
        assert_eq!(forest_to_wire(&forest), vec![v1::ForestTree { nodes: wire.clone() }]);
        let mut no_counts = wire.clone();
        no_counts[2].class_counts.clear();
        assert!(
            matches!(forest_from_wire(&[v1::ForestTree { nodes: no_counts }], 2, 2), Err(WireError::Tree(_))),
            "a forest leaf needs counts"
        );
        let mut wrong = wire;
        wrong[1].class_counts.push(0);
        assert_eq!(tree_from_wire(&wrong, 2, 2), Err(WireError::TooMany { field: "class_counts", found: 3, max: 2 }));
        let sampling = v1::ForestSampling { num_trees: 0, seed: 1, subsampling_rate: 1.0, bootstrap: true };
        assert!(forest_plan_from_wire(&sampling, 9).is_err());
        let sampling = v1::ForestSampling { num_trees: 3, subsampling_rate: 1.5, ..sampling };
        assert!(forest_plan_from_wire(&sampling, 9).is_err());
    }
}

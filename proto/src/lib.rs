//! The canopy.v1 gRPC contract: generated code and the conversions between wire messages and
//! the tree crate's types. No other crate touches the generated types' internals.

use canopy_tree::model::Split;
use canopy_tree::{BinEdges, FeatureBins, Node, NodeId, SplitDecision, Tree};
use thiserror::Error;

#[allow(clippy::all, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("canopy.v1");
}

/// Bumped on any incompatible change of the contract; checked at the first contact.
pub const PROTOCOL_VERSION: u32 = 1;

/// gRPC messages are capped at 4 MiB by default; we allow larger control messages (a deep
/// tree's histograms) and keep each Flight message of rows well under it.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Target size of one Arrow Flight message of rows.
pub const FLIGHT_CHUNK_BYTES: usize = 2 << 20;

#[derive(Debug, Error, PartialEq)]
pub enum WireError {
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

pub fn edges_to_wire(edges: &BinEdges) -> Vec<v1::FeatureBins> {
    edges.features.iter().map(|f| v1::FeatureBins { name: f.name.clone(), thresholds: f.thresholds.clone() }).collect()
}

pub fn edges_from_wire(features: &[v1::FeatureBins]) -> BinEdges {
    BinEdges { features: features.iter().map(|f| FeatureBins { name: f.name.clone(), thresholds: f.thresholds.clone() }).collect() }
}

/// The routing part of a tree: what an executor needs to predict binned rows.
pub fn tree_to_wire(tree: &Tree) -> Vec<v1::TreeNode> {
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
        })
        .collect()
}

/// Rebuilds a routing-only tree (no counts, no raw thresholds) and checks its shape.
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
            Ok(Node { id: NodeId(id), depth: 0, class_counts: Vec::new(), impurity: 0.0, prediction: n.prediction, split })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_bins_are_refused() {
        let wire = v1::SplitDecision { node: 0, feature: 0, threshold_bin: 300, left: 1, right: 2 };
        assert_eq!(SplitDecision::try_from(&wire), Err(WireError::OutOfRange { field: "threshold_bin", value: 300, target: "u8" }));
    }

    #[test]
    fn routing_tree_round_trips() {
        let wire = vec![
            v1::TreeNode { prediction: 0, split: Some(v1::NodeSplit { feature: 1, threshold_bin: 3, left: 1, right: 2 }) },
            v1::TreeNode { prediction: 0, split: None },
            v1::TreeNode { prediction: 1, split: None },
        ];
        let tree = tree_from_wire(&wire, 2, 2).expect("valid");
        assert_eq!(tree.predict_binned(|_| 4), 1);
        assert_eq!(tree_to_wire(&tree), wire);
        assert!(tree_from_wire(&wire[..1], 2, 2).is_err(), "children out of range");
    }
}

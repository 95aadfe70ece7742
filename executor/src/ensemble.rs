//! Ensemble mode on the executor side: raw rows of the partitions held, a linfa-trees
//! DecisionTree fitted on them, and the majority vote of the driver's trees on test rows.
//! Everything of this mode that an executor does is here.

use std::collections::BTreeMap;

use canopy_proto::partition::RawRows;
use canopy_tree::{ConfusionMatrix, Impurity, PartitionId};
use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality};
use ndarray::{Array1, Array2};

use crate::ExecutorError;

/// Raw values of the partitions held, by partition id.
#[derive(Default)]
pub struct EnsembleRows {
    raw: BTreeMap<PartitionId, RawRows>,
}

pub struct LocalTreeParams {
    pub max_depth: usize,
    pub min_instances_per_node: usize,
    pub min_info_gain: f64,
    pub impurity: Impurity,
}

impl EnsembleRows {
    pub fn insert(&mut self, id: PartitionId, rows: RawRows) {
        self.raw.insert(id, rows);
    }

    pub fn remove(&mut self, id: PartitionId) {
        self.raw.remove(&id);
    }

    /// The named partitions stacked into one matrix and their labels.
    fn stack(&self, ids: &[PartitionId], features: usize) -> Result<(Array2<f64>, Vec<u8>), ExecutorError> {
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for id in ids {
            let rows = self
                .raw
                .get(id)
                .ok_or_else(|| ExecutorError::Tree(canopy_tree::TreeError::PartitionNotHeld { partition: id.to_string() }))?;
            values.extend_from_slice(&rows.values);
            labels.extend_from_slice(&rows.labels);
        }
        let array = Array2::from_shape_vec((labels.len(), features), values)
            .map_err(|e| ExecutorError::PartitionData(format!("raw rows do not form a matrix: {e}")))?;
        Ok((array, labels))
    }

    /// A linfa-trees DecisionTree on the named training partitions, as serde JSON, and its rows.
    pub fn train_local_tree(
        &self,
        ids: &[PartitionId],
        features: usize,
        params: &LocalTreeParams,
    ) -> Result<(Vec<u8>, u64), ExecutorError> {
        if params.min_instances_per_node == 0 {
            return Err(ExecutorError::InvalidRequest("min_instances_per_node must be at least 1".into()));
        }
        if !(params.min_info_gain.is_finite() && params.min_info_gain >= 0.0) {
            return Err(ExecutorError::InvalidRequest(format!("min_info_gain must be finite and >= 0, got {}", params.min_info_gain)));
        }
        let (records, labels) = self.stack(ids, features)?;
        if labels.is_empty() {
            return Err(ExecutorError::InvalidRequest("the named partitions hold no training rows".into()));
        }
        let targets: Array1<usize> = labels.iter().map(|&l| usize::from(l)).collect();
        let dataset = Dataset::new(records, targets);
        let quality = match params.impurity {
            Impurity::Gini => SplitQuality::Gini,
            Impurity::Entropy => SplitQuality::Entropy,
        };
        let model = DecisionTree::params()
            .max_depth(Some(params.max_depth))
            .min_weight_split(2.0 * params.min_instances_per_node as f32)
            .min_weight_leaf(params.min_instances_per_node as f32)
            // linfa requires a strictly positive minimum decrease.
            .min_impurity_decrease(params.min_info_gain.max(f64::EPSILON))
            .split_quality(quality)
            .fit(&dataset)
            .map_err(|e| ExecutorError::LocalModel(e.to_string()))?;
        let json = serde_json::to_vec(&model).map_err(|e| ExecutorError::LocalModel(e.to_string()))?;
        Ok((json, labels.len() as u64))
    }

    /// Majority vote of `trees` (ties to the lowest class) on the named test partitions. Trees
    /// are checked before use: a feature index out of range would panic inside linfa.
    pub fn evaluate(
        &self,
        ids: &[PartitionId],
        trees_json: &[Vec<u8>],
        features: usize,
        num_classes: usize,
    ) -> Result<ConfusionMatrix, ExecutorError> {
        let trees = trees_json
            .iter()
            .map(|json| serde_json::from_slice::<DecisionTree<f64, usize>>(json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ExecutorError::InvalidRequest(format!("ensemble tree is not a linfa DecisionTree: {e}")))?;
        if let Some(f) = trees.iter().flat_map(|t| t.features()).find(|&f| f >= features) {
            return Err(ExecutorError::InvalidRequest(format!("ensemble tree splits on feature {f} of {features}")));
        }
        let (records, labels) = self.stack(ids, features)?;
        let mut votes = vec![0u32; labels.len() * num_classes];
        for tree in &trees {
            for (row, class) in tree.predict(&records).iter().enumerate() {
                if *class >= num_classes {
                    return Err(ExecutorError::LocalModel(format!("tree predicts class {class} of {num_classes}")));
                }
                votes[row * num_classes + class] += 1;
            }
        }
        let mut cm = ConfusionMatrix::new(num_classes);
        for (row, &label) in labels.iter().enumerate() {
            let row_votes = &votes[row * num_classes..(row + 1) * num_classes];
            let winner = row_votes.iter().enumerate().fold(0, |best, (c, &v)| if v > row_votes[best] { c } else { best });
            cm.add(usize::from(label), winner);
        }
        Ok(cm)
    }
}

//! The executor's task kinds, as plain functions over a job: no gRPC types here.

use canopy_tree::{ConfusionMatrix, NodeHistogram, NodeId, Tree};
use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality};
use ndarray::{Array1, Array2};

use crate::ExecutorError;
use crate::store::{Job, RawRows};

/// Histograms of `nodes` summed over every training partition held.
pub fn build_histograms(job: &Job, nodes: &[NodeId]) -> Vec<NodeHistogram> {
    let mut out = vec![NodeHistogram::zeros(&job.layout); nodes.len()];
    for partition in job.train.values() {
        partition.add_histograms(nodes, &job.layout, &mut out);
    }
    out
}

/// Confusion matrix of `tree` over every test partition held.
pub fn evaluate(job: &Job, tree: &Tree) -> ConfusionMatrix {
    let mut cm = ConfusionMatrix::new(job.num_classes);
    for partition in job.test.values() {
        partition.add_confusion(tree, &mut cm);
    }
    cm
}

pub struct LocalTreeParams {
    pub max_depth: usize,
    pub min_instances_per_node: usize,
    pub min_info_gain: f64,
    pub entropy: bool,
}

fn stack(rows: &[&RawRows], features: usize) -> Result<(Array2<f64>, Vec<u8>), ExecutorError> {
    let values: Vec<f64> = rows.iter().flat_map(|r| r.values.iter().copied()).collect();
    let labels: Vec<u8> = rows.iter().flat_map(|r| r.labels.iter().copied()).collect();
    let array = Array2::from_shape_vec((labels.len(), features), values)
        .map_err(|e| ExecutorError::PartitionData(format!("raw rows do not form a matrix: {e}")))?;
    Ok((array, labels))
}

/// Ensemble mode: a linfa-trees DecisionTree on this executor's shard, as serde JSON.
pub fn train_local_tree(job: &Job, params: &LocalTreeParams) -> Result<(Vec<u8>, u64), ExecutorError> {
    let shard: Vec<&RawRows> = job.raw_train.values().collect();
    let (records, labels) = stack(&shard, job.edges.num_features())?;
    if labels.is_empty() {
        return Err(ExecutorError::InvalidRequest("this executor holds no training rows".into()));
    }
    let targets: Array1<usize> = labels.iter().map(|&l| usize::from(l)).collect();
    let dataset = Dataset::new(records, targets);
    let quality = if params.entropy { SplitQuality::Entropy } else { SplitQuality::Gini };
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

/// Ensemble mode: majority vote of `trees` (ties to the lowest class) on the test rows.
pub fn evaluate_ensemble(job: &Job, trees_json: &[Vec<u8>]) -> Result<ConfusionMatrix, ExecutorError> {
    let trees = trees_json
        .iter()
        .map(|json| serde_json::from_slice::<DecisionTree<f64, usize>>(json))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExecutorError::InvalidRequest(format!("ensemble tree is not a linfa DecisionTree: {e}")))?;
    let test: Vec<&RawRows> = job.raw_test.values().collect();
    let (records, labels) = stack(&test, job.edges.num_features())?;
    let mut votes = vec![0u32; labels.len() * job.num_classes];
    for tree in &trees {
        for (row, class) in tree.predict(&records).iter().enumerate() {
            if *class >= job.num_classes {
                return Err(ExecutorError::LocalModel(format!("tree predicts class {class} of {}", job.num_classes)));
            }
            votes[row * job.num_classes + class] += 1;
        }
    }
    let mut cm = ConfusionMatrix::new(job.num_classes);
    for (row, &label) in labels.iter().enumerate() {
        let row_votes = &votes[row * job.num_classes..(row + 1) * job.num_classes];
        let winner = row_votes.iter().enumerate().fold(0, |best, (c, &v)| if v > row_votes[best] { c } else { best });
        cm.add(usize::from(label), winner);
    }
    Ok(cm)
}

//! Ensemble mode on the driver side (`--mode ensemble`): every executor fits a linfa-trees
//! DecisionTree on the training partitions it holds, and the model is their majority vote,
//! evaluated on the executors' test partitions. Its accuracy changes with the executor count
//! by design. Everything of this mode that the driver does is here.

use canopy_proto::{partitions_to_wire, v1};
use canopy_tree::{ConfusionMatrix, Role, ValidTreeParams};

use crate::dispatch::Dispatcher;
use crate::error::{DriverError, Result};

/// One linfa tree per executor that holds training rows, as serde JSON, in executor id order.
pub async fn train(dispatcher: &mut Dispatcher, params: &ValidTreeParams) -> Result<Vec<Vec<u8>>> {
    let job_id = dispatcher.job_id().to_string();
    let answers = dispatcher
        .step("train local trees", Role::Train, |t| {
            let request = v1::TrainLocalTreeRequest {
                job_id: job_id.clone(),
                max_depth: params.max_depth,
                min_instances_per_node: params.min_instances_per_node,
                min_info_gain: params.min_info_gain,
                impurity: v1::Impurity::from(params.impurity) as i32,
                partitions: partitions_to_wire(&t.partitions),
            };
            let mut client = t.client;
            async move { client.train_local_tree(request).await.map(|r| r.into_inner()) }
        })
        .await?;
    Ok(answers.into_iter().map(|(_, a)| a.tree_json).collect())
}

/// The majority vote of `trees` on every test partition.
pub async fn evaluate(dispatcher: &mut Dispatcher, trees_json: &[Vec<u8>]) -> Result<ConfusionMatrix> {
    let job_id = dispatcher.job_id().to_string();
    let answers = dispatcher
        .step("evaluate ensemble", Role::Test, |t| {
            let request = v1::EvaluateEnsembleRequest {
                job_id: job_id.clone(),
                trees_json: trees_json.to_vec(),
                partitions: partitions_to_wire(&t.partitions),
            };
            let mut client = t.client;
            async move { client.evaluate_ensemble(request).await.map(|r| r.into_inner()) }
        })
        .await?;
    dispatcher.merge_confusion(answers)
}

/// The trees as JSON values, for the model file.
pub fn model_values(trees_json: &[Vec<u8>]) -> Result<Vec<serde_json::Value>> {
    trees_json
        .iter()
        .map(|t| serde_json::from_slice::<serde_json::Value>(t))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| DriverError::Internal(format!("ensemble tree is not JSON: {e}")))
}

//! The saved model: a stable JSON document with everything needed to score a file the way the
//! training data was scored: feature spec, encodings, bin edges, parameters and the tree (or
//! the ensemble's linfa trees). It holds no timings or executor counts, so the same training
//! gives the same bytes. The format is documented in the README ("The model file").

use std::path::Path;

use canopy_tree::{BinEdges, Tree, TreeParams};
use linfa::prelude::Predict;
use linfa_trees::DecisionTree;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::config::{FeatureSpec, Mode, SplitSpec};
use crate::data::features::Encoding;
use crate::error::{DriverError, Result};

pub const MODEL_FORMAT: &str = "canopy-model";
pub const MODEL_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub format: String,
    pub format_version: u32,
    pub mode: Mode,
    pub features: FeatureSpec,
    pub feature_names: Vec<String>,
    pub encoding: Encoding,
    pub bin_edges: BinEdges,
    pub params: TreeParams,
    pub split: SplitSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Tree>,
    /// Ensemble mode: linfa-trees DecisionTrees (their serde form), combined by majority vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<Vec<serde_json::Value>>,
}

impl ModelFile {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| DriverError::Internal(format!("model serialization: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn load(path: &Path) -> Result<ModelFile> {
        let invalid = |reason: String| DriverError::InvalidModel { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| DriverError::UnreadableFile { path: path.to_path_buf(), reason: e.to_string() })?;
        let model: ModelFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if model.format != MODEL_FORMAT || model.format_version != MODEL_FORMAT_VERSION {
            return Err(invalid(format!(
                "format {} v{}, expected {MODEL_FORMAT} v{MODEL_FORMAT_VERSION}",
                model.format, model.format_version
            )));
        }
        if model.feature_names != model.features.feature_names() {
            return Err(invalid("feature_names do not match the feature spec".into()));
        }
        match (&model.tree, &model.ensemble) {
            (Some(tree), None) => {
                tree.validate().map_err(|e| invalid(e.to_string()))?;
                if tree.num_features as usize != model.feature_names.len() {
                    return Err(invalid("tree and feature names disagree on the feature count".into()));
                }
            }
            (None, Some(trees)) if !trees.is_empty() => {}
            _ => return Err(invalid("a model holds either a tree or a non-empty ensemble".into())),
        }
        Ok(model)
    }

    /// Predicts every row of column-major raw features.
    pub fn predict(&self, columns: &[Vec<f64>]) -> Result<Vec<u32>> {
        let rows = columns.first().map_or(0, Vec::len);
        if let Some(tree) = &self.tree {
            let mut row = vec![0.0; columns.len()];
            return Ok((0..rows)
                .map(|r| {
                    for (f, c) in columns.iter().enumerate() {
                        row[f] = c[r];
                    }
                    tree.predict(&row)
                })
                .collect());
        }
        let trees = self
            .ensemble
            .as_ref()
            .ok_or_else(|| DriverError::Internal("model has neither tree nor ensemble".into()))?
            .iter()
            .map(|v| serde_json::from_value::<DecisionTree<f64, usize>>(v.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| DriverError::Internal(format!("ensemble tree: {e}")))?;
        let records = Array2::from_shape_fn((rows, columns.len()), |(r, f)| columns[f][r]);
        let k = self.encoding.class_names.len();
        let mut votes = vec![0u32; rows * k];
        for tree in &trees {
            for (r, &class) in tree.predict(&records).iter().enumerate() {
                if class < k {
                    votes[r * k + class] += 1;
                }
            }
        }
        Ok((0..rows)
            .map(|r| {
                let v = &votes[r * k..(r + 1) * k];
                v.iter().enumerate().fold(0, |best, (c, &n)| if n > v[best] { c } else { best }) as u32
            })
            .collect())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

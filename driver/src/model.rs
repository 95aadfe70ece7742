//! The saved model: a stable JSON document with everything needed to score a file the way the
//! training data was scored: feature spec, encodings, bin edges, parameters and the tree (or
//! the ensemble's linfa trees). It holds no timings or executor counts, so the same training
//! gives the same bytes. The format is documented in the README ("The model file").

use std::path::Path;

use canopy_tree::{BinEdges, Forest, ForestParams, Tree, TreeParams};
use linfa::prelude::Predict;
use linfa_trees::DecisionTree;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::config::{FeatureSpec, Mode, SplitSpec};
use crate::data::features::{Encoding, MAX_CLASSES};
use crate::error::{DriverError, Result};

pub const MODEL_FORMAT: &str = "canopy-model";
/// The newest format: version 2 added forests. A file is written with the oldest version that
/// holds it, so tree and ensemble models stay version 1, byte for byte as before, and older
/// readers still load them; this reader loads both.
pub const MODEL_FORMAT_VERSION: u32 = 2;

/// The version a model needs: 2 for a forest, else 1.
pub fn format_version_for(forest: bool) -> u32 {
    if forest { 2 } else { 1 }
}

/// A random forest in the model file: its parameters, the features per node they fixed, and
/// the trees, each numbering its own nodes from 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestModel {
    pub params: ForestParams,
    pub features_per_node: usize,
    pub trees: Forest,
}

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
    /// Forest mode (format version 2): trees whose leaves' class distributions are summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forest: Option<ForestModel>,
}

impl ModelFile {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| DriverError::Internal(format!("model serialization: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Reads and checks a model file; see [`ModelFile::parse`].
    pub fn load(path: &Path) -> Result<LoadedModel> {
        let bytes = std::fs::read(path).map_err(|e| DriverError::UnreadableFile { path: path.to_path_buf(), reason: e.to_string() })?;
        ModelFile::parse(path, &bytes)
    }

    /// Parses the model read from `path` and checks everything scoring relies on, so that a
    /// hostile or damaged file is refused here with [`DriverError::InvalidModel`] instead of
    /// panicking or mislabelling rows later.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<LoadedModel> {
        let invalid = |reason: String| DriverError::InvalidModel { path: path.to_path_buf(), reason };
        let file: ModelFile = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let ensemble = file.check().map_err(invalid)?;
        Ok(LoadedModel { file, ensemble })
    }

    /// Checks the model; returns the ensemble's trees, parsed (empty for a single tree).
    fn check(&self) -> std::result::Result<Vec<DecisionTree<f64, usize>>, String> {
        if self.format != MODEL_FORMAT || !(1..=MODEL_FORMAT_VERSION).contains(&self.format_version) {
            return Err(format!("format {} v{}, expected {MODEL_FORMAT} v1 to v{MODEL_FORMAT_VERSION}", self.format, self.format_version));
        }
        if self.forest.is_some() && self.format_version < 2 {
            return Err(format!("a forest needs format version 2, the file says {}", self.format_version));
        }
        self.features.check().map_err(|e| format!("features: {e}"))?;
        if self.feature_names != self.features.feature_names() {
            return Err("feature_names do not match the feature spec".into());
        }
        let features = self.feature_names.len();
        if self.bin_edges.num_features() != features {
            return Err(format!("bin_edges has {} features but the model has {features}", self.bin_edges.num_features()));
        }
        self.params.clone().check().map_err(|e| format!("params: {e}"))?;
        let encoding = &self.encoding;
        if encoding.label != self.features.label {
            return Err("the encoding's label differs from the features' label".into());
        }
        // Labels are scored as one byte, and a classifier has at least two classes.
        let classes = encoding.class_names.len();
        if !(2..=MAX_CLASSES).contains(&classes) {
            return Err(format!("the encoding has {classes} classes; a model has between 2 and {MAX_CLASSES}"));
        }
        let buckets = encoding.label.buckets.len();
        if buckets > 0 && classes != buckets + 1 {
            return Err(format!("the label has {buckets} buckets, so {} classes, but the encoding names {classes}", buckets + 1));
        }
        if let Some(column) = self.features.categorical.iter().find(|c| !encoding.string_indexes.contains_key(*c)) {
            return Err(format!("the encoding has no category index for '{column}'"));
        }
        match (&self.tree, &self.ensemble, &self.forest) {
            (Some(tree), None, None) => {
                if tree.num_features as usize != features {
                    return Err(format!("the tree has {} features but the model has {features}", tree.num_features));
                }
                if tree.num_classes as usize != classes {
                    return Err(format!("the tree has {} classes but the model has {classes}", tree.num_classes));
                }
                tree.validate().map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            (None, Some(trees), None) if !trees.is_empty() => trees
                .iter()
                .enumerate()
                .map(|(t, value)| check_linfa_tree(value, features, classes).map_err(|e| format!("ensemble tree {t}: {e}")))
                .collect(),
            (None, None, Some(forest)) => {
                let trees = forest.trees.trees.len();
                if forest.params.num_trees as usize != trees {
                    return Err(format!("the forest has {trees} trees but its params say {}", forest.params.num_trees));
                }
                forest.trees.validate(features, classes).map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            _ => Err("a model holds exactly one of a tree, a non-empty ensemble or a forest".into()),
        }
    }
}

/// Parses one ensemble tree and checks that scoring cannot index past the features or
/// classes, nor reach a split without children (linfa would panic on any of these).
fn check_linfa_tree(value: &serde_json::Value, features: usize, classes: usize) -> std::result::Result<DecisionTree<f64, usize>, String> {
    let tree = DecisionTree::<f64, usize>::deserialize(value).map_err(|e| e.to_string())?;
    // Nodes are numbered in level order from the root (node 0).
    for (i, node) in tree.iter_nodes().enumerate() {
        if let Some(class) = node.prediction() {
            if class >= classes {
                return Err(format!("node {i} predicts class {class} but the model has {classes} classes"));
            }
        } else {
            let (feature, _, _) = node.split();
            if feature >= features {
                return Err(format!("node {i} splits on feature {feature} but the model has {features} features"));
            }
            if node.children().iter().any(|c| c.is_none()) {
                return Err(format!("node {i} is a split without two children"));
            }
        }
    }
    Ok(tree)
}

/// A model that passed [`ModelFile::parse`], with its ensemble parsed once.
#[derive(Debug)]
pub struct LoadedModel {
    pub file: ModelFile,
    ensemble: Vec<DecisionTree<f64, usize>>,
}

impl LoadedModel {
    /// Predicts every row of column-major raw features.
    pub fn predict(&self, columns: &[Vec<f64>]) -> Result<Vec<u32>> {
        if columns.len() != self.file.feature_names.len() {
            return Err(DriverError::Internal(format!(
                "{} feature columns for a model of {}",
                columns.len(),
                self.file.feature_names.len()
            )));
        }
        let rows = columns.first().map_or(0, Vec::len);
        let by_row = |predict: &dyn Fn(&[f64]) -> u32| {
            let mut row = vec![0.0; columns.len()];
            (0..rows)
                .map(|r| {
                    for (f, c) in columns.iter().enumerate() {
                        row[f] = c[r];
                    }
                    predict(&row)
                })
                .collect()
        };
        if let Some(tree) = &self.file.tree {
            return Ok(by_row(&|row| tree.predict(row)));
        }
        if let Some(forest) = &self.file.forest {
            return Ok(by_row(&|row| forest.trees.predict(row)));
        }
        let records = Array2::from_shape_fn((rows, columns.len()), |(r, f)| columns[f][r]);
        let k = self.file.encoding.class_names.len();
        let mut votes = vec![0u32; rows * k];
        for tree in &self.ensemble {
            for (r, &class) in tree.predict(&records).iter().enumerate() {
                // Checked at load; a class out of range would only lose its vote.
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

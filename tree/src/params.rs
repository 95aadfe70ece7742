//! Training parameters as a checked builder: `TreeParams` -> `ValidTreeParams`.
//! Defaults are Spark MLlib's DecisionTreeClassifier defaults.

use serde::{Deserialize, Serialize};

use crate::TreeError;

/// Node impurity used to score splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Impurity {
    #[default]
    Gini,
    Entropy,
}

impl Impurity {
    /// Impurity of a node with the given class counts and total.
    pub fn of(self, counts: &[u64], total: u64) -> f64 {
        if total == 0 {
            return 0.0;
        }
        let n = total as f64;
        match self {
            Impurity::Gini => {
                let sum_sq: f64 = counts.iter().map(|&c| (c as f64 / n).powi(2)).sum();
                1.0 - sum_sq
            }
            Impurity::Entropy => counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| {
                    let p = c as f64 / n;
                    -p * p.log2()
                })
                .sum(),
        }
    }
}

impl std::str::FromStr for Impurity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gini" => Ok(Impurity::Gini),
            "entropy" => Ok(Impurity::Entropy),
            other => Err(format!("unknown impurity '{other}', expected 'gini' or 'entropy'")),
        }
    }
}

/// Unchecked parameters; call [`TreeParams::check`] to get [`ValidTreeParams`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TreeParams {
    pub max_depth: u32,
    pub max_bins: u32,
    pub min_instances_per_node: u64,
    pub min_info_gain: f64,
    pub impurity: Impurity,
    /// Memory budget for the histograms of one node batch (Spark's maxMemoryInMB).
    pub max_memory_mb: u64,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams {
            max_depth: 5,
            max_bins: 32,
            min_instances_per_node: 1,
            min_info_gain: 0.0,
            impurity: Impurity::Gini,
            max_memory_mb: 256,
        }
    }
}

/// Deepest tree allowed; node ids stay well inside u32 and Spark has the same limit.
pub const MAX_DEPTH_LIMIT: u32 = 30;

impl TreeParams {
    pub fn check(self) -> Result<ValidTreeParams, TreeError> {
        if self.max_depth > MAX_DEPTH_LIMIT {
            return Err(TreeError::InvalidMaxDepth { max: MAX_DEPTH_LIMIT, found: self.max_depth });
        }
        if !(2..=256).contains(&self.max_bins) {
            return Err(TreeError::InvalidMaxBins { found: self.max_bins });
        }
        if self.min_instances_per_node == 0 {
            return Err(TreeError::InvalidMinInstancesPerNode { found: self.min_instances_per_node });
        }
        if !self.min_info_gain.is_finite() || self.min_info_gain < 0.0 {
            return Err(TreeError::InvalidMinInfoGain { found: self.min_info_gain });
        }
        if self.max_memory_mb == 0 {
            return Err(TreeError::InvalidMaxMemory { found: self.max_memory_mb });
        }
        Ok(ValidTreeParams(self))
    }
}

/// Parameters that passed [`TreeParams::check`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidTreeParams(TreeParams);

impl std::ops::Deref for ValidTreeParams {
    type Target = TreeParams;
    fn deref(&self) -> &TreeParams {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sparks() {
        let p = TreeParams::default().check().expect("defaults are valid");
        assert_eq!((p.max_depth, p.max_bins, p.min_instances_per_node, p.min_info_gain), (5, 32, 1, 0.0));
        assert_eq!(p.impurity, Impurity::Gini);
    }

    #[test]
    fn each_bad_field_has_its_error() {
        let bad = |f: fn(&mut TreeParams)| {
            let mut p = TreeParams::default();
            f(&mut p);
            p.check().expect_err("must be rejected")
        };
        assert_eq!(bad(|p| p.max_depth = 31), TreeError::InvalidMaxDepth { max: 30, found: 31 });
        assert_eq!(bad(|p| p.max_bins = 1), TreeError::InvalidMaxBins { found: 1 });
        assert_eq!(bad(|p| p.max_bins = 257), TreeError::InvalidMaxBins { found: 257 });
        assert_eq!(bad(|p| p.min_instances_per_node = 0), TreeError::InvalidMinInstancesPerNode { found: 0 });
        assert!(matches!(bad(|p| p.min_info_gain = f64::NAN), TreeError::InvalidMinInfoGain { .. }));
        assert_eq!(bad(|p| p.max_memory_mb = 0), TreeError::InvalidMaxMemory { found: 0 });
    }

    #[test]
    fn impurities_by_hand() {
        assert_eq!(Impurity::Gini.of(&[5, 5], 10), 0.5);
        assert_eq!(Impurity::Gini.of(&[10, 0], 10), 0.0);
        assert_eq!(Impurity::Entropy.of(&[5, 5], 10), 1.0);
        assert_eq!(Impurity::Entropy.of(&[0, 0], 0), 0.0);
    }
}

//! Bin edges: computed once, on the driver, from the whole training set.
//!
//! Spark samples each partition to find its thresholds, so its model moves with the partition
//! count. Ours are exact quantiles of the global value counts, so every partitioning bins alike.

use serde::{Deserialize, Serialize};

use crate::TreeError;

/// Thresholds of one feature. A value `x` falls in bin `i` = the number of thresholds `< x`,
/// so bin `i` holds `thresholds[i-1] < x <= thresholds[i]` and a split "bin <= b" is the
/// raw-value rule "x <= thresholds[b]".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    pub name: String,
    pub thresholds: Vec<f64>,
}

impl FeatureBins {
    /// Thresholds from a feature's distinct values and their counts, sorted by value.
    ///
    /// With at most `max_bins` distinct values every value gets its own bin (thresholds are
    /// midpoints between neighbours). Otherwise thresholds sit at the equal-count quantiles,
    /// each at the midpoint between the two distinct values it separates.
    pub fn from_value_counts(name: &str, value_counts: &[(f64, u64)], max_bins: u32) -> Result<Self, TreeError> {
        for (row, &(value, _)) in value_counts.iter().enumerate() {
            if !value.is_finite() {
                return Err(TreeError::NonFiniteValue { feature: name.to_string(), row, value });
            }
        }
        let midpoint = |i: usize| {
            let (a, b) = (value_counts[i].0, value_counts[i + 1].0);
            a + (b - a) / 2.0
        };
        let max_bins = max_bins as usize;
        let thresholds = if value_counts.len() <= max_bins {
            (0..value_counts.len().saturating_sub(1)).map(midpoint).collect()
        } else {
            let total: u128 = value_counts.iter().map(|&(_, c)| u128::from(c)).sum();
            let mut thresholds: Vec<f64> = Vec::with_capacity(max_bins - 1);
            let mut cumulative: u128 = 0;
            let mut i = 0;
            for j in 1..max_bins as u128 {
                let target = (j * total).div_ceil(max_bins as u128);
                while i < value_counts.len() && cumulative + u128::from(value_counts[i].1) < target {
                    cumulative += u128::from(value_counts[i].1);
                    i += 1;
                }
                // Boundary after distinct value i (the one that reaches the target).
                if i + 1 < value_counts.len() {
                    let t = midpoint(i);
                    if thresholds.last().is_none_or(|&last| t > last) {
                        thresholds.push(t);
                    }
                }
            }
            thresholds
        };
        Ok(FeatureBins { name: name.to_string(), thresholds })
    }

    /// Number of bins (thresholds + 1).
    pub fn num_bins(&self) -> usize {
        self.thresholds.len() + 1
    }

    /// The bin of a raw value; see the type's doc for the rule.
    pub fn bin_of(&self, value: f64) -> u8 {
        // At most 255 thresholds (max_bins <= 256), so the count fits a byte.
        self.thresholds.partition_point(|&t| t < value) as u8
    }
}

/// The bins of every feature, in feature-vector order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinEdges {
    pub features: Vec<FeatureBins>,
}

impl BinEdges {
    pub fn num_features(&self) -> usize {
        self.features.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(values: &[f64]) -> Vec<(f64, u64)> {
        values.iter().map(|&v| (v, 1)).collect()
    }

    #[test]
    fn few_distinct_values_get_one_bin_each() {
        let b = FeatureBins::from_value_counts("x", &[(1.0, 10), (2.0, 1), (4.0, 7)], 32).expect("valid");
        assert_eq!(b.thresholds, vec![1.5, 3.0]);
        assert_eq!((b.bin_of(1.0), b.bin_of(2.0), b.bin_of(3.0), b.bin_of(4.0), b.bin_of(9.0)), (0, 1, 1, 2, 2));
    }

    #[test]
    fn many_values_split_at_equal_count_quantiles() {
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let b = FeatureBins::from_value_counts("x", &counts(&values), 4).expect("valid");
        assert_eq!(b.thresholds, vec![24.5, 49.5, 74.5]);
        let per_bin = values.iter().fold([0; 4], |mut acc, &v| {
            acc[b.bin_of(v) as usize] += 1;
            acc
        });
        assert_eq!(per_bin, [25, 25, 25, 25]);
    }

    #[test]
    fn heavy_value_does_not_duplicate_thresholds() {
        let b = FeatureBins::from_value_counts("x", &[(0.0, 1), (1.0, 1000), (2.0, 1), (3.0, 1)], 3).expect("valid");
        assert_eq!(b.thresholds, vec![1.5]);
    }

    #[test]
    fn single_value_has_one_bin() {
        let b = FeatureBins::from_value_counts("x", &[(7.0, 3)], 32).expect("valid");
        assert_eq!(b.num_bins(), 1);
        assert_eq!(b.bin_of(-1e9), 0);
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let err = FeatureBins::from_value_counts("DepDelay", &[(1.0, 1), (f64::INFINITY, 1)], 32).expect_err("inf");
        assert_eq!(err, TreeError::NonFiniteValue { feature: "DepDelay".into(), row: 1, value: f64::INFINITY });
    }
}

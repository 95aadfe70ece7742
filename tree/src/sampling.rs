//! Random-forest sampling, drawn from hashes instead of random-number generators: a row's
//! bootstrap weight in tree `t` is a function of (seed, t, row number) and a node's feature
//! subset a function of (seed, t, node id). Nothing depends on how rows are partitioned, which
//! executor holds them or in what order they are visited, so a forest is the same on any number
//! of executors. (Spark seeds its samplers per partition, so its forests change with the
//! partitioning.)
//!
//! Weights are small integers (Poisson draws), so weighted histograms stay integer counts and
//! merge to the same bits in any order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{NodeId, TreeError};

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from the top 53 bits of a hash.
fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Keeps the streams of weights and feature subsets apart for the same seed and tree.
const WEIGHT_STREAM: u64 = 0x5745_4947_4854_0001;
const FEATURE_STREAM: u64 = 0x4645_4154_5552_0002;

/// How many features a node may split on (Spark's `featureSubsetStrategy`). Written as
/// Spark writes it, in experiment files and model files alike.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FeatureSubset {
    /// `all` for one tree, `sqrt` for a forest (classification).
    Auto,
    All,
    /// ceil(sqrt(n))
    Sqrt,
    /// max(1, ceil(log2(n)))
    Log2,
    /// ceil(n / 3)
    OneThird,
    /// ceil(fraction × n), fraction in (0, 1]
    Fraction(f64),
    /// min(count, n), count ≥ 1
    Count(usize),
}

impl FeatureSubset {
    /// Features each node considers, for `num_features` features and a forest of `num_trees`.
    pub fn features_per_node(self, num_features: usize, num_trees: usize) -> usize {
        let n = num_features as f64;
        let k = match self {
            FeatureSubset::Auto if num_trees <= 1 => num_features,
            FeatureSubset::Auto | FeatureSubset::Sqrt => n.sqrt().ceil() as usize,
            FeatureSubset::All => num_features,
            FeatureSubset::Log2 => (n.log2().ceil() as usize).max(1),
            FeatureSubset::OneThird => (n / 3.0).ceil() as usize,
            FeatureSubset::Fraction(f) => (f * n).ceil() as usize,
            FeatureSubset::Count(c) => c,
        };
        k.clamp(1.min(num_features), num_features)
    }
}

impl FromStr for FeatureSubset {
    type Err = TreeError;

    /// Spark's spellings: auto, all, sqrt, log2, onethird, a count ("3") or a fraction ("0.5").
    fn from_str(s: &str) -> Result<Self, TreeError> {
        let invalid = || TreeError::InvalidFeatureSubset { found: s.to_string() };
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => FeatureSubset::Auto,
            "all" => FeatureSubset::All,
            "sqrt" => FeatureSubset::Sqrt,
            "log2" => FeatureSubset::Log2,
            "onethird" => FeatureSubset::OneThird,
            other => {
                if let Ok(count) = other.parse::<usize>() {
                    if count == 0 {
                        return Err(invalid());
                    }
                    FeatureSubset::Count(count)
                } else {
                    let fraction: f64 = other.parse().map_err(|_| invalid())?;
                    if !(fraction > 0.0 && fraction <= 1.0) {
                        return Err(invalid());
                    }
                    FeatureSubset::Fraction(fraction)
                }
            }
        })
    }
}

impl TryFrom<String> for FeatureSubset {
    type Error = TreeError;
    fn try_from(s: String) -> Result<Self, TreeError> {
        s.parse()
    }
}

impl From<FeatureSubset> for String {
    fn from(subset: FeatureSubset) -> String {
        subset.to_string()
    }
}

impl fmt::Display for FeatureSubset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureSubset::Auto => f.write_str("auto"),
            FeatureSubset::All => f.write_str("all"),
            FeatureSubset::Sqrt => f.write_str("sqrt"),
            FeatureSubset::Log2 => f.write_str("log2"),
            FeatureSubset::OneThird => f.write_str("onethird"),
            FeatureSubset::Fraction(x) => write!(f, "{x}"),
            FeatureSubset::Count(c) => write!(f, "{c}"),
        }
    }
}

/// Largest weight a Poisson draw may give: beyond it the probability is below 2^-53 for any
/// rate ≤ 1, so the table ends there.
const MAX_WEIGHT: usize = 24;

/// Per-tree row weights: Poisson(rate) draws with `bootstrap` (sampling with replacement, as
/// Spark's), otherwise 0 or 1 with probability `rate` (all 1 at rate 1).
#[derive(Debug, Clone, PartialEq)]
pub struct RowSampler {
    seed: u64,
    rate: f64,
    bootstrap: bool,
    /// `cdf[k]` = P(weight ≤ k); compared with one uniform per (tree, row).
    cdf: Vec<f64>,
}

impl RowSampler {
    pub fn new(seed: u64, rate: f64, bootstrap: bool) -> Result<Self, TreeError> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(TreeError::InvalidSubsamplingRate { found: rate });
        }
        let mut cdf = Vec::with_capacity(MAX_WEIGHT + 1);
        let mut p = (-rate).exp();
        let mut total = 0.0;
        for k in 0..=MAX_WEIGHT {
            total += p;
            cdf.push(total);
            p *= rate / (k + 1) as f64;
        }
        Ok(RowSampler { seed, rate, bootstrap, cdf })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn rate(&self) -> f64 {
        self.rate
    }
    pub fn bootstrap(&self) -> bool {
        self.bootstrap
    }

    /// Weight of row `row` (its number in the input) in tree `tree`.
    pub fn weight(&self, tree: u32, row: u64) -> u32 {
        if !self.bootstrap && self.rate >= 1.0 {
            return 1;
        }
        let u = unit(mix(mix(self.seed ^ WEIGHT_STREAM) ^ mix(u64::from(tree)) ^ mix(row.rotate_left(32))));
        if !self.bootstrap {
            return u32::from(u < self.rate);
        }
        // Inversion: the first k with u < P(weight ≤ k).
        self.cdf.iter().position(|&c| u < c).unwrap_or(MAX_WEIGHT) as u32
    }
}

/// The `k` features node `node` of tree `tree` may split on, ascending: the k features with the
/// smallest hashes of (seed, tree, node, feature), a uniform choice without replacement.
pub fn node_features(seed: u64, tree: u32, node: NodeId, num_features: usize, k: usize) -> Vec<usize> {
    if k >= num_features {
        return (0..num_features).collect();
    }
    let base = mix(mix(seed ^ FEATURE_STREAM) ^ mix(u64::from(tree)) ^ mix(u64::from(node.0).rotate_left(32)));
    let mut ranked: Vec<(u64, usize)> = (0..num_features).map(|f| (mix(base ^ f as u64), f)).collect();
    ranked.sort_unstable();
    let mut chosen: Vec<usize> = ranked[..k].iter().map(|&(_, f)| f).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_counts_follow_spark() {
        let k = |s: &str, n, trees| s.parse::<FeatureSubset>().expect("valid").features_per_node(n, trees);
        assert_eq!([k("auto", 9, 1), k("auto", 9, 20), k("sqrt", 10, 20), k("all", 9, 20)], [9, 3, 4, 9]);
        assert_eq!([k("log2", 9, 20), k("log2", 1, 20), k("onethird", 9, 20), k("onethird", 10, 20)], [4, 1, 3, 4]);
        assert_eq!([k("0.5", 9, 20), k("1.0", 9, 20), k("1", 9, 20), k("12", 9, 20), k("0.01", 9, 20)], [5, 9, 1, 9, 1]);
        assert_eq!(k("SQRT", 16, 2), 4);
        assert_eq!(FeatureSubset::Fraction(0.25).to_string().parse::<FeatureSubset>(), Ok(FeatureSubset::Fraction(0.25)));
    }

    #[test]
    fn bad_feature_subsets_are_refused() {
        for bad in ["", "0", "-1", "0.0", "1.5", "nan", "half", "inf"] {
            assert_eq!(bad.parse::<FeatureSubset>(), Err(TreeError::InvalidFeatureSubset { found: bad.to_string() }), "{bad}");
        }
    }

    #[test]
    fn bad_rates_are_refused() {
        for rate in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
            assert!(matches!(RowSampler::new(1, rate, true), Err(TreeError::InvalidSubsamplingRate { .. })), "{rate}");
        }
    }

    #[test]
    fn bootstrap_weights_are_poisson() {
        let sampler = RowSampler::new(42, 1.0, true).expect("valid");
        let rows = 200_000u64;
        let mut histogram = [0u64; 8];
        let mut total = 0u64;
        for row in 1..=rows {
            let w = sampler.weight(3, row);
            histogram[(w as usize).min(7)] += 1;
            total += u64::from(w);
        }
        // Poisson(1): P(0) = P(1) = 0.3679, P(2) = 0.1839, P(3) = 0.0613; mean 1.
        let share = |k: usize| histogram[k] as f64 / rows as f64;
        assert!((share(0) - 0.3679).abs() < 0.005 && (share(1) - 0.3679).abs() < 0.005, "{histogram:?}");
        assert!((share(2) - 0.1839).abs() < 0.004 && (share(3) - 0.0613).abs() < 0.003, "{histogram:?}");
        assert!((total as f64 / rows as f64 - 1.0).abs() < 0.01, "{total}");
    }

    #[test]
    fn weights_depend_on_seed_tree_and_row_only() {
        let a = RowSampler::new(7, 0.632, true).expect("valid");
        let b = RowSampler::new(7, 0.632, true).expect("valid");
        let weights = |s: &RowSampler, tree| (1..=1000).map(|r| s.weight(tree, r)).collect::<Vec<_>>();
        assert_eq!(weights(&a, 0), weights(&b, 0));
        assert_ne!(weights(&a, 0), weights(&a, 1), "trees draw different samples");
        let other_seed = RowSampler::new(8, 0.632, true).expect("valid");
        assert_ne!(weights(&a, 0), weights(&other_seed, 0));
        // Visiting order does not matter: a weight is a pure function.
        let backwards: Vec<u32> = (1..=1000).rev().map(|r| a.weight(0, r)).collect();
        assert_eq!(backwards.into_iter().rev().collect::<Vec<_>>(), weights(&a, 0));
    }

    #[test]
    fn without_bootstrap_weights_are_zero_or_one() {
        let all = RowSampler::new(1, 1.0, false).expect("valid");
        assert!((1..=1000).all(|r| all.weight(0, r) == 1));
        let half = RowSampler::new(1, 0.5, false).expect("valid");
        let kept: u32 = (1..=100_000).map(|r| half.weight(2, r)).sum();
        assert!((49_000..51_000).contains(&kept), "{kept}");
        assert!((1..=1000).all(|r| half.weight(2, r) <= 1));
    }

    #[test]
    fn node_features_are_a_seeded_uniform_subset() {
        let chosen = node_features(42, 0, NodeId(5), 9, 3);
        assert_eq!(chosen.len(), 3);
        assert!(chosen.windows(2).all(|w| w[0] < w[1]) && chosen.iter().all(|&f| f < 9));
        assert_eq!(chosen, node_features(42, 0, NodeId(5), 9, 3));
        assert_eq!(node_features(42, 0, NodeId(5), 9, 9), (0..9).collect::<Vec<_>>());
        assert_eq!(node_features(42, 0, NodeId(5), 9, 20), (0..9).collect::<Vec<_>>());
        // Every feature is chosen about k/n of the time over many nodes.
        let mut picks = [0u32; 9];
        for node in 0..9000 {
            for f in node_features(42, 1, NodeId(node), 9, 3) {
                picks[f] += 1;
            }
        }
        assert!(picks.iter().all(|&p| (2800..3200).contains(&p)), "{picks:?}");
        let differs = (0..100).filter(|&n| node_features(42, 0, NodeId(n), 9, 3) != node_features(42, 1, NodeId(n), 9, 3)).count();
        assert!(differs > 80, "{differs}");
    }
}

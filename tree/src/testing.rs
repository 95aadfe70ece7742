//! Helpers shared by the unit tests: a dependency-free seeded generator and exact bin edges.

use std::collections::BTreeMap;

use crate::{BinEdges, FeatureBins};

/// A small deterministic generator (PCG's LCG step), so tests need no dependency.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Exact edges of integer-valued columns, as the driver computes them.
pub fn edges_of(columns: &[Vec<f64>], max_bins: u32) -> BinEdges {
    let features = columns
        .iter()
        .enumerate()
        .map(|(f, column)| {
            let mut counts = BTreeMap::<i64, u64>::new();
            column.iter().for_each(|&v| *counts.entry(v as i64).or_default() += 1);
            let value_counts: Vec<(f64, u64)> = counts.into_iter().map(|(v, c)| (v as f64, c)).collect();
            FeatureBins::from_value_counts(&format!("f{f}"), &value_counts, max_bins).expect("finite values")
        })
        .collect();
    BinEdges { features }
}

//! The first pass of preparation: exact counts per unit, merged into the global ones. Counts
//! are sums, so the merge gives the same result in any order; from them come the encoding
//! (category and class frequencies over every labelled row) and the bin edges (value counts
//! over the training rows).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use canopy_tree::{BinEdges, FeatureBins};

use crate::error::{DataError, Result};
use crate::features::{Encoding, LabelValues, MAX_CLASSES, UnitFeatures, bucket_names};
use crate::spec::FeatureSpec;
use crate::split::Role;

/// Value (f64 bits) -> training rows with it.
type ValueCounts = HashMap<u64, u64, BuildHasherDefault<BitsHasher>>;

/// Text value -> (labelled rows, training rows) with it.
type TextCounts = HashMap<String, [u64; 2]>;

/// Sent by executors that count their own rows (JSON), so the driver merges them.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub rows_read: u64,
    pub labelled: u64,
    pub train: u64,
    pub test: u64,
    classes: TextCounts,
    categories: Vec<TextCounts>,
    numbers: Vec<ValueCounts>,
}

impl Counts {
    /// The counts of one unit; `role` gives a row's side of the split from its row number.
    pub fn of(features: &UnitFeatures, role: impl Fn(u64) -> Role) -> Counts {
        let train: Vec<bool> = features.row_numbers.iter().map(|&r| role(r) == Role::Train).collect();
        let train_rows = train.iter().filter(|&&t| t).count() as u64;
        let labelled = features.row_numbers.len() as u64;
        let text_counts = |categories: &crate::features::Categories| -> TextCounts {
            let distinct = categories.values().len();
            let mut by_code = vec![[0u64; 2]; distinct];
            for (&k, &t) in categories.keys().values().iter().zip(&train) {
                if let Some(counts) = by_code.get_mut(k as usize) {
                    counts[0] += 1;
                    counts[1] += u64::from(t);
                }
            }
            let text = arrow::array::AsArray::as_string::<i32>(categories.values());
            let mut out = TextCounts::default();
            for (k, counts) in by_code.into_iter().enumerate().filter(|(_, c)| c[0] > 0) {
                let entry = out.entry(text.value(k).to_string()).or_default();
                entry[0] += counts[0];
                entry[1] += counts[1];
            }
            out
        };
        let numbers = features
            .numeric
            .iter()
            .map(|values| {
                let mut counts = ValueCounts::default();
                for (&v, _) in values.values().iter().zip(&train).filter(|(_, t)| **t) {
                    // -0.0 and 0.0 are one value.
                    let v = if v == 0.0 { 0.0 } else { v };
                    *counts.entry(v.to_bits()).or_default() += 1;
                }
                counts
            })
            .collect();
        let classes = match &features.label {
            Some(LabelValues::Classes(classes)) => text_counts(classes),
            _ => TextCounts::default(),
        };
        Counts {
            rows_read: features.rows_read,
            labelled,
            train: train_rows,
            test: labelled - train_rows,
            classes,
            categories: features.categorical.iter().map(text_counts).collect(),
            numbers,
        }
    }

    /// Whether counts that came from elsewhere (an executor) are of `spec`'s features: one
    /// category count per categorical column, one value count per numeric one, and consistent
    /// row totals.
    pub fn fits(&self, spec: &FeatureSpec) -> bool {
        self.categories.len() == spec.categorical.len()
            && self.numbers.len() == spec.numeric.len()
            && self.train.checked_add(self.test) == Some(self.labelled)
            && self.labelled <= self.rows_read
    }

    pub fn merge(mut self, other: Counts) -> Counts {
        self.rows_read += other.rows_read;
        self.labelled += other.labelled;
        self.train += other.train;
        self.test += other.test;
        add_text(&mut self.classes, other.classes);
        if self.categories.is_empty() {
            self.categories = other.categories;
        } else {
            self.categories.iter_mut().zip(other.categories).for_each(|(a, b)| add_text(a, b));
        }
        if self.numbers.is_empty() {
            self.numbers = other.numbers;
        } else {
            for (a, b) in self.numbers.iter_mut().zip(other.numbers) {
                for (value, n) in b {
                    *a.entry(value).or_default() += n;
                }
            }
        }
        self
    }

    /// Category indexes by descending frequency, ties by ascending value (Spark's
    /// StringIndexer order), and the label's classes.
    pub fn encoding(&self, spec: &FeatureSpec, path: &std::path::Path) -> Result<Encoding> {
        let string_indexes = spec.categorical.iter().cloned().zip(self.categories.iter().map(frequency_order)).collect();
        let class_names = if spec.label.buckets.is_empty() {
            let classes = frequency_order(&self.classes);
            if classes.len() > MAX_CLASSES {
                return Err(DataError::TooManyClasses {
                    path: path.to_path_buf(),
                    column: spec.label.column.clone(),
                    found: classes.len(),
                    max: MAX_CLASSES,
                });
            }
            classes
        } else {
            bucket_names(&spec.label.buckets)
        };
        Ok(Encoding { label: spec.label.clone(), class_names, string_indexes })
    }

    /// Quantile edges of every feature from its training rows' value counts (a category's
    /// value is its index).
    pub fn edges(&self, encoding: &Encoding, spec: &FeatureSpec, max_bins: u32) -> Result<BinEdges> {
        let mut features = Vec::with_capacity(self.numbers.len() + self.categories.len());
        for (name, counts) in spec.numeric.iter().zip(&self.numbers) {
            let mut value_counts: Vec<(f64, u64)> = counts.iter().map(|(&bits, &n)| (f64::from_bits(bits), n)).collect();
            value_counts.sort_by(|a, b| a.0.total_cmp(&b.0));
            features.push(FeatureBins::from_value_counts(name, &value_counts, max_bins)?);
        }
        for (name, counts) in spec.categorical.iter().zip(&self.categories) {
            let index = encoding.string_indexes.get(name).ok_or_else(|| DataError::Internal(format!("no index for '{name}'")))?;
            let value_counts: Vec<(f64, u64)> =
                index.iter().enumerate().filter_map(|(k, v)| counts.get(v).filter(|c| c[1] > 0).map(|c| (k as f64, c[1]))).collect();
            features.push(FeatureBins::from_value_counts(&format!("{name}_index"), &value_counts, max_bins)?);
        }
        Ok(BinEdges { features })
    }
}

fn add_text(into: &mut TextCounts, from: TextCounts) {
    for (value, counts) in from {
        let entry = into.entry(value).or_default();
        entry[0] += counts[0];
        entry[1] += counts[1];
    }
}

fn frequency_order(counts: &TextCounts) -> Vec<String> {
    let mut values: Vec<(&String, u64)> = counts.iter().map(|(v, c)| (v, c[0])).collect();
    values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    values.into_iter().map(|(v, _)| v.clone()).collect()
}

/// A hasher for u64 keys such as f64 bit patterns: SplitMix64's finaliser, which spreads the high bits (where
/// small integers differ) into the low bits the table indexes by. SipHash would dominate the
/// counting.
#[derive(Default)]
pub(crate) struct BitsHasher(u64);

impl std::hash::Hasher for BitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = crate::split::mix(v);
    }
}

//! Data for the kernel benchmarks: binned rows shaped like the flight features.

use canopy_tree::{BinEdges, BinnedPartition, FeatureBins};

/// Bins per feature of the reference features at max_bins 32 on the flight data.
pub const FEATURE_BINS: [u8; 9] = [23, 32, 31, 7, 32, 16, 3, 32, 32];

/// A seeded generator (SplitMix64), so benchmarks need no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Edges whose bin counts are [`FEATURE_BINS`].
pub fn edges() -> BinEdges {
    BinEdges {
        features: FEATURE_BINS
            .iter()
            .enumerate()
            .map(|(f, &bins)| FeatureBins { name: format!("f{f}"), thresholds: (1..bins).map(|t| f64::from(t) - 0.5).collect() })
            .collect(),
    }
}

/// Raw values (integers, so each falls in a known bin) and labels for `rows` rows.
pub fn raw(rows: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<u8>) {
    let mut rng = Rng(seed);
    let columns = FEATURE_BINS.iter().map(|&b| (0..rows).map(|_| (rng.next_u64() % u64::from(b)) as f64).collect()).collect();
    let labels = (0..rows).map(|_| (rng.next_u64() % 4) as u8).collect();
    (columns, labels)
}

pub fn partition(rows: usize, seed: u64) -> BinnedPartition {
    let (columns, labels) = raw(rows, seed);
    let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    BinnedPartition::from_columns(&refs, labels, &edges(), 4).unwrap_or_else(|e| panic!("benchmark data is valid: {e}"))
}

/// The rows of [`partition`] packed as the tree crate packs them (bins, then the label), for
/// [`row_major_histogram`].
pub fn packed(rows: usize, seed: u64) -> Vec<u8> {
    let (columns, labels) = raw(rows, seed);
    let mut out = Vec::with_capacity(rows * (columns.len() + 1));
    for (row, &label) in labels.iter().enumerate() {
        // Values are the integers 0..bins and the edges sit halfway between them: bin = value.
        out.extend(columns.iter().map(|c| c[row] as u8));
        out.push(label);
    }
    out
}

/// The first histogram kernel (row-major counters, index = feature start + bin × classes +
/// label), kept as the side-by-side baseline of the tree crate's kernel.
pub fn row_major_histogram(rows: &[u8], stride: usize, classes: usize, out: &mut [u64]) {
    let features = stride - 1;
    let mut starts = Vec::with_capacity(features);
    let mut total = 0;
    for &bins in &FEATURE_BINS[..features] {
        starts.push(total * classes);
        total += usize::from(bins);
    }
    let mut counts = vec![0u32; total * classes];
    for bytes in rows.chunks_exact(stride) {
        let label = usize::from(bytes[features]);
        for (&bin, &start) in bytes.iter().zip(&starts) {
            counts[start + usize::from(bin) * classes + label] += 1;
        }
    }
    for (o, c) in out.iter_mut().zip(counts) {
        *o += u64::from(c);
    }
}

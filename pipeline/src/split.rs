//! The seeded train/test split and partitioning. Each row's fate is a hash of (seed, its row
//! number in the file): independent of the executor count, of read parallelism and of which
//! other rows were dropped.

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Train,
    Test,
}

/// Role and partition of the row with 1-based file row number `row`.
pub fn assign(seed: u64, row: u64, test_fraction: f64, partitions: u32) -> (Role, u32) {
    let h = mix(seed ^ mix(row));
    let uniform = (h >> 11) as f64 / (1u64 << 53) as f64;
    let role = if uniform < test_fraction { Role::Test } else { Role::Train };
    let partition = (mix(h) % u64::from(partitions.max(1))) as u32;
    (role, partition)
}

/// The partitions of a file of `rows` rows that executors read: `partitions` contiguous ranges
/// of row numbers (1-based, ends excluded), as even as whole rows allow.
pub struct RowRanges {
    /// Where each range starts, and one past the last row.
    starts: Vec<u64>,
}

impl RowRanges {
    pub fn new(partitions: u32, rows: u64) -> RowRanges {
        let n = u128::from(partitions.max(1));
        let starts = (0..=n).map(|i| 1 + (i * u128::from(rows) / n) as u64).collect();
        RowRanges { starts }
    }

    /// The rows of partition `index`.
    pub fn range(&self, index: u32) -> std::ops::Range<u64> {
        let i = (index as usize).min(self.starts.len() - 2);
        self.starts[i]..self.starts[i + 1]
    }

    /// The partition that holds `row` (a row of the file).
    pub fn of(&self, row: u64) -> u32 {
        (self.starts.partition_point(|&start| start <= row).saturating_sub(1) as u32).min(self.starts.len() as u32 - 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ranges_tile_the_file_and_find_each_rows_range() {
        for (partitions, rows) in [(1, 1), (3, 10), (4, 4), (7, 100), (8, 3), (5, 327_346)] {
            let layout = RowRanges::new(partitions, rows);
            let ranges: Vec<_> = (0..partitions).map(|i| layout.range(i)).collect();
            assert_eq!(ranges[0].start, 1);
            assert_eq!(ranges[partitions as usize - 1].end, rows + 1);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            for (i, range) in ranges.iter().enumerate() {
                assert!(range.clone().all(|row| layout.of(row) == i as u32), "{partitions} {rows} {range:?}");
            }
        }
        assert_eq!(RowRanges::new(3, 10).range(1), 4..7);
        assert_eq!(RowRanges::new(8, 3).range(2), 1..2);
        assert_eq!(RowRanges::new(8, 3).range(1), 1..1);
    }

    #[test]
    fn split_is_seeded_and_close_to_the_fraction() {
        let test_rows = (1..=100_000).filter(|&r| assign(42, r, 0.2, 12).0 == Role::Test).count();
        assert!((19_500..20_500).contains(&test_rows), "{test_rows}");
        assert_eq!(assign(42, 7, 0.2, 12), assign(42, 7, 0.2, 12));
        let differs = (1..=1000).filter(|&r| assign(1, r, 0.2, 12) != assign(2, r, 0.2, 12)).count();
        assert!(differs > 500);
        let mut per_partition = [0u32; 12];
        (1..=120_000).for_each(|r| per_partition[assign(42, r, 0.2, 12).1 as usize] += 1);
        assert!(per_partition.iter().all(|&n| (9_500..10_500).contains(&n)), "{per_partition:?}");
    }
}

//! The hot kernels, each against a baseline run side by side:
//! - histogram construction against a plain sequential read of a buffer of the same size (the
//!   machine's memory bandwidth for the bytes the kernel reads); the ratio is printed first;
//! - binning, merge, split search and prediction, with throughputs.
//!
//! `cargo bench -p canopy-bench` (release profile).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use canopy_bench::{edges, partition, raw};
use canopy_tree::split::best_split;
use canopy_tree::{BinnedPartition, HistogramLayout, LocalStats, NodeHistogram, NodeId, PartitionId, TreeParams, grow_tree};
use criterion::{Criterion, Throughput, criterion_group};

/// 8 M rows: 80 MB of binned rows, more than the 32 MB last-level cache, so both the
/// histogram and the baseline read from memory.
const ROWS: usize = 1 << 23;

/// Bytes the histogram kernel reads per row: one bin per feature and the label.
fn bytes_read(rows: usize) -> usize {
    rows * (canopy_bench::FEATURE_BINS.len() + 1)
}

fn sequential_read(buffer: &[u64]) -> u64 {
    buffer.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

fn median_seconds(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The figures the targets are stated in, printed before Criterion's own numbers: the
/// kernel's time per row and feature against the first (row-major) kernel on the same rows in
/// the same run, and against a sequential read of as many bytes (the memory bandwidth).
fn print_kernel_ratios() {
    let part = partition(ROWS, 1);
    let layout = HistogramLayout::new(&edges(), 4);
    let buffer = vec![1u64; bytes_read(ROWS) / 8];
    let packed = canopy_bench::packed(ROWS, 1);
    let stride = canopy_bench::FEATURE_BINS.len() + 1;
    let hist = median_seconds(|| {
        let mut out = vec![NodeHistogram::zeros(&layout)];
        part.add_histograms(&[NodeId::ROOT], &layout, &mut out);
        black_box(out);
    });
    let first = median_seconds(|| {
        let mut out = vec![0u64; layout.len()];
        canopy_bench::row_major_histogram(black_box(&packed), stride, 4, &mut out);
        black_box(out);
    });
    // Both kernels count the same rows into the same histogram.
    let mut mine = vec![NodeHistogram::zeros(&layout)];
    part.add_histograms(&[NodeId::ROOT], &layout, &mut mine);
    let mut theirs = vec![0u64; layout.len()];
    canopy_bench::row_major_histogram(&packed, stride, 4, &mut theirs);
    assert_eq!(mine[0].counts, theirs, "the kernels disagree");
    let read = median_seconds(|| {
        black_box(sequential_read(black_box(&buffer)));
    });
    let values = (ROWS * canopy_bench::FEATURE_BINS.len()) as f64;
    let gb = bytes_read(ROWS) as f64 / 1e9;
    println!(
        "histogram kernel: {:.3} ns per row-feature ({:.2} ms for {ROWS} rows x {} features); first row-major kernel, same rows: {:.3} ns \
         ({:.2}x faster now); sequential read of the same {:.1} MB: {:.2} ms ({:.2} GB/s), kernel/read ratio {:.2}x",
        hist * 1e9 / values,
        hist * 1e3,
        canopy_bench::FEATURE_BINS.len(),
        first * 1e9 / values,
        first / hist,
        gb * 1e3,
        read * 1e3,
        gb / read,
        hist / read
    );
}

fn histograms(c: &mut Criterion) {
    print_kernel_ratios();
    let layout = HistogramLayout::new(&edges(), 4);
    let mut group = c.benchmark_group("histogram");
    group.throughput(Throughput::Bytes(bytes_read(ROWS) as u64));
    let buffer = vec![1u64; bytes_read(ROWS) / 8];
    group.bench_function("baseline_sequential_read", |b| b.iter(|| sequential_read(black_box(&buffer))));
    let root = partition(ROWS, 1);
    group.bench_function("root_node", |b| {
        b.iter(|| {
            let mut out = vec![NodeHistogram::zeros(&layout)];
            root.add_histograms(&[NodeId::ROOT], &layout, &mut out);
            out
        })
    });
    // A level of 8 nodes after three splits: every row is read once, through the row index.
    let mut split = partition(ROWS, 1);
    // Node ids 0; 1,2; 3..6; 7..14 as the grower assigns them.
    let decisions: Vec<canopy_tree::SplitDecision> = (0..7u32)
        .map(|n| canopy_tree::SplitDecision {
            node: NodeId(n),
            feature: n % 9,
            threshold_bin: 1,
            left: NodeId(2 * n + 1),
            right: NodeId(2 * n + 2),
        })
        .collect();
    split.apply_splits(&decisions).unwrap();
    let level: Vec<NodeId> = (7..15).map(NodeId).collect();
    group.bench_function("level_of_8_nodes", |b| {
        b.iter(|| {
            let mut out = vec![NodeHistogram::zeros(&layout); level.len()];
            split.add_histograms(&level, &layout, &mut out);
            out
        })
    });
    group.finish();
}

fn binning(c: &mut Criterion) {
    let (columns, labels) = raw(ROWS, 2);
    let edges = edges();
    let mut group = c.benchmark_group("binning");
    group.throughput(Throughput::Elements((ROWS * columns.len()) as u64));
    group.bench_function("from_columns", |b| {
        b.iter(|| {
            let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
            BinnedPartition::from_columns(&refs, labels.clone(), &edges, 4).unwrap()
        })
    });
    group.finish();
}

fn merge_and_split_search(c: &mut Criterion) {
    let layout = HistogramLayout::new(&edges(), 4);
    let part = partition(1 << 16, 3);
    let mut one = vec![NodeHistogram::zeros(&layout)];
    part.add_histograms(&[NodeId::ROOT], &layout, &mut one);
    let hist = one.remove(0);
    let counts = hist.class_counts(&layout);
    let mut group = c.benchmark_group("driver");
    group.throughput(Throughput::Elements(64));
    group.bench_function("merge_64_node_histograms", |b| {
        let others = vec![hist.clone(); 64];
        b.iter(|| {
            let mut acc = vec![NodeHistogram::zeros(&layout); 64];
            for (a, o) in acc.iter_mut().zip(&others) {
                a.merge(o);
            }
            acc
        })
    });
    let params = TreeParams::default().check().unwrap();
    let features: Vec<usize> = (0..layout.num_features()).collect();
    group.bench_function("split_search_64_nodes", |b| {
        b.iter(|| {
            for _ in 0..64 {
                black_box(best_split(black_box(&hist), &layout, &counts, &params, &features));
            }
        })
    });
    group.finish();
}

fn prediction(c: &mut Criterion) {
    let rows = 1 << 16;
    let (columns, labels) = raw(rows, 4);
    let edges = edges();
    let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    let part = BinnedPartition::from_columns(&refs, labels, &edges, 4).unwrap();
    let params = TreeParams::default().check().unwrap();
    let mut source = LocalStats::with_partitions(HistogramLayout::new(&edges, 4), [(PartitionId::train(0), part)]);
    let (tree, _) = grow_tree(&mut source, &edges, 4, &params, |_| {}).unwrap();
    let mut group = c.benchmark_group("predict");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("raw_rows_depth5", |b| {
        let mut row = vec![0.0; columns.len()];
        b.iter(|| {
            (0..rows)
                .map(|r| {
                    for (f, c) in columns.iter().enumerate() {
                        row[f] = c[r];
                    }
                    tree.predict(&row)
                })
                .sum::<u32>()
        })
    });
    group.finish();
}

criterion_group! {
    name = kernels;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = histograms, binning, merge_and_split_search, prediction
}

fn main() {
    kernels();
    Criterion::default().configure_from_args().final_summary();
}

//! The tree crate's one error type.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum TreeError {
    #[error("max_depth must be between 0 and {max}, got {found}")]
    InvalidMaxDepth { max: u32, found: u32 },
    #[error("max_bins must be between 2 and 256 (bins are stored as one byte), got {found}")]
    InvalidMaxBins { found: u32 },
    #[error("min_instances_per_node must be at least 1, got {found}")]
    InvalidMinInstancesPerNode { found: u64 },
    #[error("min_info_gain must be a finite number >= 0, got {found}")]
    InvalidMinInfoGain { found: f64 },
    #[error("max_memory_mb must be at least 1, got {found}")]
    InvalidMaxMemory { found: u64 },
    #[error("num_classes must be between 2 and 255, got {found}")]
    InvalidNumClasses { found: usize },
    #[error("feature_subset_strategy must be auto, all, sqrt, log2, onethird, a count >= 1 or a fraction in (0, 1], got '{found}'")]
    InvalidFeatureSubset { found: String },
    #[error("subsampling_rate must be in (0, 1], got {found}")]
    InvalidSubsamplingRate { found: f64 },
    #[error("num_trees must be between 1 and {max}, got {found}")]
    InvalidNumTrees { max: u32, found: u32 },
    #[error("a forest's training partition needs each row's number in the input (a 'row' column) to draw its samples")]
    MissingRowNumbers,
    #[error("feature '{feature}' has a non-finite value {value} at row {row}")]
    NonFiniteValue { feature: String, row: usize, value: f64 },
    #[error("feature '{feature}' has bin {bin} at row {row}, but only {bins} bins")]
    BinOutOfRange { feature: String, row: usize, bin: u8, bins: usize },
    #[error("label {label} at row {row} is not below num_classes {num_classes}")]
    LabelOutOfRange { row: usize, label: u32, num_classes: usize },
    #[error("partition has {found} feature columns, expected {expected}")]
    FeatureCountMismatch { expected: usize, found: usize },
    #[error("column lengths differ: {detail}")]
    RaggedColumns { detail: String },
    #[error("histogram for node {node} has {found} counts, expected {expected}")]
    HistogramSizeMismatch { node: u32, expected: usize, found: usize },
    #[error("histogram subtraction underflow at node {node}: a child holds more rows than its parent")]
    SubtractionUnderflow { node: u32 },
    #[error("split log gap: expected decision #{expected}, got #{found}")]
    SplitLogGap { expected: usize, found: usize },
    #[error("split log conflict at decision #{index}: {found} contradicts the logged {logged}")]
    SplitLogConflict { index: usize, logged: String, found: String },
    #[error("invalid split decision #{index}: {detail}")]
    InvalidDecision { index: usize, detail: String },
    #[error("node {node} is not a leaf of the tree being grown")]
    NotALeaf { node: u32 },
    #[error("partition {partition} is held already")]
    DuplicatePartition { partition: String },
    #[error("partition {partition} is not held here")]
    PartitionNotHeld { partition: String },
    #[error("partition {partition} has the wrong role for this request")]
    WrongPartitionRole { partition: String },
    #[error("split decision names feature {feature} but there are {features} features")]
    UnknownFeature { feature: u32, features: usize },
    #[error("tree is malformed: {detail}")]
    MalformedTree { detail: String },
    #[error("no training rows")]
    EmptyTrainingSet,
}

//! Histogram-based decision-tree learning, the one place the algorithm lives.
//!
//! Everything here is synchronous and free of I/O so that the driver, the executors and the
//! in-process learner share exactly the same code, and so that it tests in milliseconds.
//! The distributed learner is the serial learner with another [`StatsSource`]: see [`grower`].

pub mod bins;
pub mod error;
pub mod forest;
pub mod grower;
pub mod histogram;
pub mod local;
pub mod metrics;
pub mod model;
pub mod params;
pub mod partition;
pub mod sampling;
pub mod split;
#[cfg(test)]
mod testing;

pub use bins::{BinEdges, FeatureBins};
pub use error::TreeError;
pub use forest::{Forest, ForestParams, ForestPlan};
pub use grower::{GrowthStats, StatsSource, grow_forest, grow_tree};
pub use histogram::{HistogramLayout, NodeHistogram};
pub use local::{LocalStats, PartitionId, Role};
pub use metrics::{ClassificationMetrics, ConfusionMatrix};
pub use model::{Model, Node, NodeId, Tree};
pub use params::{Impurity, TreeParams, ValidTreeParams};
pub use partition::{BinnedPartition, SplitDecision};
pub use sampling::{FeatureSubset, RowSampler, node_features};

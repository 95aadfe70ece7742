//! What an experiment is: data, features, split, tree parameters. Read from an optional TOML
//! experiment file, then overridden by flags, then checked into a [`ValidExperiment`].
//! Defaults reproduce the Spark reference pipeline on the flight-delay data.

use std::path::{Path, PathBuf};

use canopy_tree::{ForestParams, ForestPlan, TreeParams, ValidTreeParams};
use serde::{Deserialize, Serialize};

use crate::error::{DriverError, Result};

/// The embedded dataset: NYC 2013 flights in the reference schema (see data/README.md).
pub fn embedded_dataset() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/flights-2013.parquet")
}

/// Most partitions of each of train and test. Every partition is a Flight stream to an
/// executor and a task per step, so the count bounds the driver's connections and memory;
/// 4096 is far beyond any useful split of one machine's data. Executors refuse higher indexes.
pub const MAX_PARTITIONS: u32 = canopy_proto::MAX_PARTITIONS as u32;

pub use canopy_pipeline::spec::{DerivedColumn, FeatureSpec, LabelSpec, MAX_LABEL_BUCKETS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Exact distributed histogram training: the same model on any number of executors.
    #[default]
    Exact,
    /// One linfa-trees tree per executor shard, majority vote; changes with executor count.
    Ensemble,
    /// Exact random forest (Spark's RandomForestClassifier): hashed bootstrap samples and
    /// feature subsets, so the same forest on any number of executors.
    Forest,
}

/// Who reads the rows of the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReadBy {
    /// The driver reads, encodes and bins every row and ships each partition over Arrow Flight.
    #[default]
    Driver,
    /// Each executor reads its own partitions of the Parquet file (a shared path or an
    /// object-store URL); the driver only counts, and holds no rows.
    Executors,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Ensemble => "ensemble",
            Mode::Forest => "forest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitSpec {
    pub seed: u64,
    pub test_fraction: f64,
    /// Partitions of each of train and test; fixed, so independent of the executor count.
    pub partitions: u32,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec { seed: 42, test_fraction: 0.2, partitions: 12 }
    }
}

/// The experiment file's shape (every section optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Experiment {
    pub data: Option<PathBuf>,
    pub mode: Mode,
    pub read_by: ReadBy,
    pub features: FeatureSpec,
    pub split: SplitSpec,
    pub tree: TreeParams,
    /// Forest mode's parameters (Spark's defaults); every tree also takes `tree`'s.
    pub forest: ForestParams,
}

impl Experiment {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| DriverError::ExperimentFile { path: path.to_path_buf(), reason: e.to_string() })?;
        Experiment::parse(path, &text)
    }

    /// Parses the text of the experiment file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| DriverError::ExperimentFile { path: path.to_path_buf(), reason: e.to_string() })
    }

    pub fn check(self) -> Result<ValidExperiment> {
        self.features.check().map_err(DriverError::Config)?;
        if !(self.split.test_fraction > 0.0 && self.split.test_fraction < 1.0) {
            return Err(DriverError::Config(format!("test_fraction must be in (0, 1), got {}", self.split.test_fraction)));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.split.partitions) {
            return Err(DriverError::Config(format!(
                "partitions (--partitions, or partitions in [split]) must be between 1 and {MAX_PARTITIONS}, got {}",
                self.split.partitions
            )));
        }
        let data = self.data.clone().unwrap_or_else(embedded_dataset);
        if self.read_by == ReadBy::Executors {
            if self.mode == Mode::Ensemble {
                return Err(DriverError::Config(
                    "executors read their own rows in the exact and forest modes; the ensemble's trees depend on the driver's partitions"
                        .into(),
                ));
            }
            if canopy_pipeline::load::detect_format(&data)?.0 != canopy_pipeline::load::Format::Parquet {
                return Err(DriverError::Config(format!(
                    "executors read their own rows of Parquet files only; '{}' is not one (use --read-by driver)",
                    data.display()
                )));
            }
        }
        let tree = self.tree.clone().check().map_err(DriverError::Params)?;
        // Seeded by the split's seed: one seed fixes the split, the partitions and the forest.
        let plan = self.forest.plan(self.split.seed, self.features.feature_names().len()).map_err(DriverError::Params)?;
        let forest = (self.mode == Mode::Forest).then_some((self.forest, plan));
        Ok(ValidExperiment { data, mode: self.mode, read_by: self.read_by, features: self.features, split: self.split, tree, forest })
    }
}

/// An experiment that passed [`Experiment::check`].
#[derive(Debug, Clone)]
pub struct ValidExperiment {
    pub data: PathBuf,
    pub mode: Mode,
    pub read_by: ReadBy,
    pub features: FeatureSpec,
    pub split: SplitSpec,
    pub tree: ValidTreeParams,
    /// Forest mode only: the parameters as given, and the plan they fix.
    pub forest: Option<(ForestParams, ForestPlan)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_features_are_the_references() {
        assert_eq!(
            FeatureSpec::default().feature_names(),
            ["DepDelay", "Distance", "DayOfMonth", "DayOfWeek", "DayOfYear", "Carrier_index", "Origin_index", "Dest_index", "Route_index"]
        );
    }

    #[test]
    fn experiment_file_round_trips_and_rejects_unknown_keys() {
        let text = "mode = \"ensemble\"\n[split]\nseed = 7\n[tree]\nmax_depth = 3\n";
        let e: Experiment = toml::from_str(text).expect("parses");
        assert_eq!((e.mode, e.split.seed, e.split.partitions, e.tree.max_depth), (Mode::Ensemble, 7, 12, 3));
        assert!(toml::from_str::<Experiment>("[tree]\nmax_dept = 3\n").is_err());
        let text = "mode = \"forest\"\n[forest]\nnum_trees = 7\nfeature_subset_strategy = \"log2\"\nbootstrap = false\n";
        let e = toml::from_str::<Experiment>(text).expect("parses").check().expect("valid");
        let (params, plan) = e.forest.expect("forest mode");
        assert_eq!((params.num_trees, params.bootstrap, plan.num_trees, plan.features_per_node, plan.seed), (7, false, 7, 4, 42));
        assert!(toml::from_str::<Experiment>("[forest]\nnum_tree = 3\n").is_err());
        let err = toml::from_str::<Experiment>("[forest]\nfeature_subset_strategy = \"most\"\n").expect_err("refused").to_string();
        assert!(err.contains("feature_subset_strategy must be auto, all, sqrt, log2, onethird"), "{err}");
    }

    #[test]
    fn shipped_experiment_file_is_the_default() {
        let shipped: Experiment = toml::from_str(include_str!("../../experiments/flights.toml")).expect("parses");
        assert_eq!(shipped, Experiment::default());
    }

    #[test]
    fn bad_combinations_are_rejected() {
        let mut e = Experiment::default();
        e.split.test_fraction = 1.0;
        assert!(matches!(e.check(), Err(DriverError::Config(m)) if m.contains("test_fraction")));
        let mut e = Experiment::default();
        e.features.label.buckets = vec![0.0, 0.0];
        assert!(matches!(e.check(), Err(DriverError::Config(m)) if m.contains("strictly increasing")));
        let mut e = Experiment::default();
        e.tree.max_bins = 1000;
        assert!(matches!(e.check(), Err(DriverError::Params(_))));
    }
}

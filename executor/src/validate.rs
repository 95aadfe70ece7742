//! Checks of requests that size what an executor allocates, done before anything is allocated.
//! Pure functions of the request, so the property tests can throw anything at them.

use std::collections::BTreeSet;

use canopy_pipeline::features::Encoding;
use canopy_pipeline::partitions::{FeatureEncoding, RowPartitioning};
use canopy_proto::v1;
use canopy_proto::{
    MAX_BINS, MAX_CLASSES, MAX_FEATURES, MAX_HISTOGRAM_ANSWER_BYTES, MAX_NAME_BYTES, MAX_NODE_HISTOGRAM_BYTES, MAX_PARTITIONS,
};
use canopy_tree::{ForestPlan, NodeId};

use crate::ExecutorError;

fn invalid(message: String) -> ExecutorError {
    ExecutorError::InvalidRequest(message)
}

/// What a job trains.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    Exact,
    Ensemble,
    /// The forest's trees and row sampler (checked).
    Forest(ForestPlan),
}

/// A BeginJob's shape: mode (and a forest's sampling, in forest mode only), id, classes,
/// features (unique names, at most 255 finite increasing thresholds each), and one node's
/// histogram within [`MAX_NODE_HISTOGRAM_BYTES`].
pub fn begin_job(r: &v1::BeginJobRequest) -> Result<JobKind, ExecutorError> {
    let kind = match (v1::JobMode::try_from(r.mode), &r.forest) {
        (Ok(v1::JobMode::Exact), None) => JobKind::Exact,
        (Ok(v1::JobMode::Ensemble), None) => JobKind::Ensemble,
        (Ok(v1::JobMode::Forest), Some(sampling)) => JobKind::Forest(
            canopy_proto::forest_plan_from_wire(sampling, r.features.len()).map_err(|e| invalid(format!("forest sampling: {e}")))?,
        ),
        (Ok(v1::JobMode::Forest), None) => return Err(invalid("forest mode needs the forest's sampling".into())),
        (Ok(v1::JobMode::Exact | v1::JobMode::Ensemble), Some(_)) => return Err(invalid("forest sampling outside forest mode".into())),
        _ => return Err(invalid(format!("unknown job mode {}", r.mode))),
    };
    if r.job_id.is_empty() || r.job_id.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("job_id must be 1 to {MAX_NAME_BYTES} bytes, got {}", r.job_id.len())));
    }
    let num_classes = usize::try_from(r.num_classes).unwrap_or(usize::MAX);
    if !(2..=MAX_CLASSES).contains(&num_classes) {
        return Err(invalid(format!("num_classes must be 2..={MAX_CLASSES}, got {}", r.num_classes)));
    }
    if r.features.is_empty() || r.features.len() > MAX_FEATURES {
        return Err(invalid(format!("a job needs 1 to {MAX_FEATURES} features, got {}", r.features.len())));
    }
    let mut names = BTreeSet::new();
    let mut bins = 0usize;
    for (i, f) in r.features.iter().enumerate() {
        if f.name.is_empty() || f.name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!("feature #{i}'s name must be 1 to {MAX_NAME_BYTES} bytes, got {}", f.name.len())));
        }
        if !names.insert(f.name.as_str()) {
            return Err(invalid(format!("feature '{}' is named twice", f.name)));
        }
        // Bins are bytes: at most 255 thresholds (256 bins) per feature, finite and increasing.
        if f.thresholds.len() >= MAX_BINS || f.thresholds.iter().any(|t| !t.is_finite()) || f.thresholds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(format!(
                "feature '{}' needs at most {} finite, increasing thresholds, got {}",
                f.name,
                MAX_BINS - 1,
                f.thresholds.len()
            )));
        }
        bins += f.thresholds.len() + 1;
    }
    let node_bytes = bins * num_classes * 8;
    if node_bytes > MAX_NODE_HISTOGRAM_BYTES {
        return Err(invalid(format!(
            "one node's histogram would take {node_bytes} bytes ({bins} bins x {num_classes} classes), above the limit of \
             {MAX_NODE_HISTOGRAM_BYTES}"
        )));
    }
    Ok(kind)
}

/// Most bytes of a data source's location (a path or URL).
const MAX_LOCATION_BYTES: usize = 4096;

/// A data source's location, partitioning and features: within the protocol's limits, and
/// features that parse and pass the driver's own checks. Opening the file comes after.
pub fn checked_source(source: &v1::DataSource) -> Result<(FeatureEncoding, RowPartitioning), ExecutorError> {
    if source.location.is_empty() || source.location.len() > MAX_LOCATION_BYTES {
        return Err(invalid(format!("the data location must be 1 to {MAX_LOCATION_BYTES} bytes, got {}", source.location.len())));
    }
    if source.version.len() > MAX_LOCATION_BYTES {
        return Err(invalid(format!("the data version must be at most {MAX_LOCATION_BYTES} bytes")));
    }
    if source.partitions == 0 || source.partitions as usize > MAX_PARTITIONS {
        return Err(invalid(format!("a data source needs 1 to {MAX_PARTITIONS} partitions, got {}", source.partitions)));
    }
    if !(source.test_fraction > 0.0 && source.test_fraction < 1.0) {
        return Err(invalid(format!("test_fraction must be in (0, 1), got {}", source.test_fraction)));
    }
    let features: FeatureEncoding =
        serde_json::from_slice(&source.features_json).map_err(|e| invalid(format!("the data source's features: {e}")))?;
    features.features.check().map_err(|e| invalid(format!("the data source's features: {e}")))?;
    let layout =
        RowPartitioning { rows: source.rows, partitions: source.partitions, seed: source.split_seed, test_fraction: source.test_fraction };
    Ok((features, layout))
}

/// A BeginJob's data source, when the executor reads its own rows: a valid [`checked_source`] whose
/// features and encoding are the job's, not in ensemble mode.
pub fn data_source(r: &v1::BeginJobRequest, data: &v1::DataSource) -> Result<(FeatureEncoding, Encoding, RowPartitioning), ExecutorError> {
    if v1::JobMode::try_from(r.mode) == Ok(v1::JobMode::Ensemble) {
        return Err(invalid("ensemble jobs receive their partitions; they do not read them".into()));
    }
    let (features, layout) = checked_source(data)?;
    let names = features.features.feature_names();
    if !names.iter().eq(r.features.iter().map(|f| &f.name)) {
        return Err(invalid(format!("the data source's features {names:?} are not the job's")));
    }
    let encoding = features.encoding.clone().ok_or_else(|| invalid("the data source has no encoding".into()))?;
    if encoding.class_names.len() != r.num_classes as usize || encoding.label != features.features.label {
        return Err(invalid(format!("the data source's label has {} classes; the job has {}", encoding.class_names.len(), r.num_classes)));
    }
    Ok((features, encoding, layout))
}

/// A CountPartitions: a valid [`checked_source`], and partition indexes that are ascending, distinct and
/// within it.
pub fn count_partitions(r: &v1::CountPartitionsRequest) -> Result<(FeatureEncoding, RowPartitioning), ExecutorError> {
    let data = r.source.as_ref().ok_or_else(|| invalid("CountPartitions without a data source".into()))?;
    let (features, layout) = checked_source(data)?;
    if r.partitions.is_empty() || r.partitions.windows(2).any(|w| w[0] >= w[1]) || r.partitions.iter().any(|&i| i >= layout.partitions) {
        return Err(invalid(format!("partitions to count must be ascending, distinct and below {}", layout.partitions)));
    }
    Ok((features, layout))
}

/// A BuildHistograms' nodes: distinct, and their answer within [`MAX_HISTOGRAM_ANSWER_BYTES`].
pub fn histogram_nodes(nodes: &[u32], bytes_per_node: usize) -> Result<Vec<NodeId>, ExecutorError> {
    let most = canopy_proto::histogram_nodes_per_request(bytes_per_node);
    if nodes.len() > most {
        return Err(invalid(format!(
            "{} nodes asked at once; at most {most} fit in an answer of {MAX_HISTOGRAM_ANSWER_BYTES} bytes",
            nodes.len()
        )));
    }
    let distinct: BTreeSet<u32> = nodes.iter().copied().collect();
    if distinct.len() != nodes.len() {
        return Err(invalid("a node is named twice".into()));
    }
    Ok(nodes.iter().copied().map(NodeId).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feature(name: &str, thresholds: Vec<f64>) -> v1::FeatureBins {
        v1::FeatureBins { name: name.into(), thresholds }
    }

    fn job(features: Vec<v1::FeatureBins>, num_classes: u32) -> v1::BeginJobRequest {
        v1::BeginJobRequest { job_id: "job".into(), features, num_classes, mode: v1::JobMode::Exact as i32, forest: None, source: None }
    }

    fn refused(r: &v1::BeginJobRequest) -> String {
        begin_job(r).expect_err("refused").to_string()
    }

    #[test]
    fn begin_job_refuses_what_would_cost_too_much_or_make_no_sense() {
        assert_eq!(begin_job(&job(vec![feature("x", vec![0.5])], 3)).ok(), Some(JobKind::Exact));
        assert_eq!(refused(&job(vec![], 3)), "invalid request: a job needs 1 to 1024 features, got 0");
        let many = (0..1025).map(|i| feature(&format!("f{i}"), vec![])).collect();
        assert_eq!(refused(&job(many, 3)), "invalid request: a job needs 1 to 1024 features, got 1025");
        assert_eq!(refused(&job(vec![feature("x", vec![]), feature("x", vec![])], 3)), "invalid request: feature 'x' is named twice");
        assert_eq!(refused(&job(vec![feature("", vec![])], 3)), "invalid request: feature #0's name must be 1 to 256 bytes, got 0");
        assert_eq!(
            refused(&job(vec![feature("x", vec![f64::NAN])], 3)),
            "invalid request: feature 'x' needs at most 255 finite, increasing thresholds, got 1"
        );
        assert_eq!(refused(&job(vec![feature("x", vec![])], 1)), "invalid request: num_classes must be 2..=255, got 1");
        // 1024 features of 256 bins and 255 classes would be 535 MB a node.
        let wide = (0..1024).map(|i| feature(&format!("f{i}"), (0..255).map(f64::from).collect())).collect();
        assert_eq!(
            refused(&job(wide, 255)),
            "invalid request: one node's histogram would take 534773760 bytes (262144 bins x 255 classes), above the limit of 16777216"
        );
        let empty_id = v1::BeginJobRequest { job_id: String::new(), ..job(vec![feature("x", vec![])], 2) };
        assert_eq!(refused(&empty_id), "invalid request: job_id must be 1 to 256 bytes, got 0");
        let no_mode = v1::BeginJobRequest { mode: 0, ..job(vec![feature("x", vec![])], 2) };
        assert_eq!(refused(&no_mode), "invalid request: unknown job mode 0");
        let sampling = v1::ForestSampling { num_trees: 20, seed: 1, subsampling_rate: 1.0, bootstrap: true };
        let forest = v1::BeginJobRequest { mode: v1::JobMode::Forest as i32, forest: Some(sampling), ..job(vec![feature("x", vec![])], 2) };
        assert!(matches!(begin_job(&forest), Ok(JobKind::Forest(plan)) if plan.num_trees == 20));
        let no_sampling = v1::BeginJobRequest { forest: None, ..forest.clone() };
        assert_eq!(refused(&no_sampling), "invalid request: forest mode needs the forest's sampling");
        let exact_with_sampling = v1::BeginJobRequest { mode: v1::JobMode::Exact as i32, ..forest.clone() };
        assert_eq!(refused(&exact_with_sampling), "invalid request: forest sampling outside forest mode");
        let too_many = v1::BeginJobRequest { forest: Some(v1::ForestSampling { num_trees: 1001, ..sampling }), ..forest.clone() };
        assert_eq!(refused(&too_many), "invalid request: forest sampling: invalid tree: num_trees must be between 1 and 1000, got 1001");
        let bad_rate = v1::BeginJobRequest { forest: Some(v1::ForestSampling { subsampling_rate: f64::NAN, ..sampling }), ..forest };
        assert_eq!(refused(&bad_rate), "invalid request: forest sampling: invalid tree: subsampling_rate must be in (0, 1], got NaN");
    }

    fn source(features_json: &[u8]) -> v1::DataSource {
        v1::DataSource {
            location: "/data/flights.parquet".into(),
            version: "1 bytes".into(),
            rows: 10,
            partitions: 2,
            split_seed: 7,
            test_fraction: 0.3,
            features_json: features_json.to_vec(),
        }
    }

    #[test]
    fn data_sources_are_checked_before_any_file_is_opened() {
        let spec =
            canopy_pipeline::spec::FeatureSpec { numeric: vec!["x".into()], categorical: vec![], derived: vec![], ..Default::default() };
        let encoding = canopy_pipeline::features::Encoding {
            label: spec.label.clone(),
            class_names: ["a", "b", "c", "d"].map(String::from).to_vec(),
            string_indexes: Default::default(),
        };
        let json = serde_json::to_vec(&FeatureEncoding { features: spec, encoding: Some(encoding) }).expect("serialises");
        let r = job(vec![feature("x", vec![0.5])], 4);
        let (_, _, layout) = data_source(&r, &source(&json)).expect("valid");
        assert_eq!(layout, RowPartitioning { rows: 10, partitions: 2, seed: 7, test_fraction: 0.3 });
        let refused = |r: &v1::BeginJobRequest, s: &v1::DataSource| data_source(r, s).expect_err("refused").to_string();
        assert_eq!(
            refused(&job(vec![feature("x", vec![0.5])], 3), &source(&json)),
            "invalid request: the data source's label has 4 classes; the job has 3"
        );
        assert_eq!(
            refused(&job(vec![feature("y", vec![0.5])], 4), &source(&json)),
            "invalid request: the data source's features [\"x\"] are not the job's"
        );
        assert_eq!(
            refused(&r, &v1::DataSource { partitions: 4097, ..source(&json) }),
            "invalid request: a data source needs 1 to 4096 partitions, got 4097"
        );
        assert_eq!(
            refused(&r, &v1::DataSource { location: String::new(), ..source(&json) }),
            "invalid request: the data location must be 1 to 4096 bytes, got 0"
        );
        assert!(refused(&r, &source(b"{")).starts_with("invalid request: the data source's features: EOF while parsing"));
        let ensemble = v1::BeginJobRequest { mode: v1::JobMode::Ensemble as i32, ..r.clone() };
        assert_eq!(refused(&ensemble, &source(&json)), "invalid request: ensemble jobs receive their partitions; they do not read them");
    }

    #[test]
    fn histogram_requests_fit_in_an_answer() {
        assert_eq!(histogram_nodes(&[1, 2], 1000).expect("fits"), vec![NodeId(1), NodeId(2)]);
        assert_eq!(histogram_nodes(&[1, 1], 1000).expect_err("twice").to_string(), "invalid request: a node is named twice");
        let nodes: Vec<u32> = (0..3).collect();
        assert_eq!(
            histogram_nodes(&nodes, 16 << 20).expect_err("too big").to_string(),
            "invalid request: 3 nodes asked at once; at most 2 fit in an answer of 33554432 bytes"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// Any request is answered (accepted or refused), never a panic; an accepted one's
        /// histogram fits the limit.
        #[test]
        fn begin_job_never_panics(
            mode in -2i32..5,
            forest in prop::option::of((any::<u32>(), any::<u64>(), any::<f64>(), any::<bool>())),
            job_id in ".{0,3}",
            num_classes in any::<u32>(),
            features in prop::collection::vec(("[a-c]{0,2}", prop::collection::vec(any::<f64>(), 0..300)), 0..6),
        ) {
            let r = v1::BeginJobRequest {
                job_id,
                num_classes,
                mode,
                features: features.into_iter().map(|(name, thresholds)| v1::FeatureBins { name, thresholds }).collect(),
                forest: forest.map(|(num_trees, seed, subsampling_rate, bootstrap)| v1::ForestSampling { num_trees, seed, subsampling_rate, bootstrap }),
                source: None,
            };
            if begin_job(&r).is_ok() {
                let bins: usize = r.features.iter().map(|f| f.thresholds.len() + 1).sum();
                prop_assert!(bins * r.num_classes as usize * 8 <= MAX_NODE_HISTOGRAM_BYTES);
            }
        }

        #[test]
        fn data_source_never_panics(
            json in prop::collection::vec(any::<u8>(), 0..200),
            partitions in any::<u32>(),
            test_fraction in any::<f64>(),
            classes in 0u32..300,
        ) {
            let r = job(vec![feature("x", vec![])], classes);
            let _ = data_source(&r, &v1::DataSource { partitions, test_fraction, ..source(&json) });
        }

        #[test]
        fn histogram_nodes_never_panic(nodes in prop::collection::vec(any::<u32>(), 0..64), bytes in any::<usize>()) {
            let _ = histogram_nodes(&nodes, bytes);
        }
    }
}

//! Hostile model and experiment files: a corpus of concrete bad files, each refused with an
//! exact error, and property tests that mutate valid files and expect an error or a model
//! that scores without panicking, never a panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use canopy_driver::config::Experiment;
use canopy_driver::error::DriverError;
use canopy_driver::model::ModelFile;
use common::fixture;
use proptest::prelude::*;
use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    fixture("hostile").join(name)
}

/// Every file of the corpus and its exact error; `{path}` stands for the file's path.
const CORPUS: &[(&str, &str)] = &[
    ("class-out-of-range.json", "model file '{path}' is invalid: tree is malformed: node 3 predicts class 7 of 4"),
    ("tree-claims-more-classes.json", "model file '{path}' is invalid: the tree has 8 classes but the model has 4"),
    ("child-out-of-range.json", "model file '{path}' is invalid: tree is malformed: node 0 has child 99 out of order or range"),
    ("unknown-format-version.json", "model file '{path}' is invalid: format canopy-model v3, expected canopy-model v1 to v2"),
    (
        "ensemble-feature-out-of-range.json",
        "model file '{path}' is invalid: ensemble tree 0: node 0 splits on feature 5 but the model has 2 features",
    ),
    (
        "ensemble-class-out-of-range.json",
        "model file '{path}' is invalid: ensemble tree 0: node 1 predicts class 4 but the model has 4 classes",
    ),
    ("ensemble-split-without-children.json", "model file '{path}' is invalid: ensemble tree 0: node 0 is a split without two children"),
    ("bin-edges-feature-count.json", "model file '{path}' is invalid: bin_edges has 1 features but the model has 2"),
    (
        "buckets-and-classes-disagree.json",
        "model file '{path}' is invalid: the label has 3 buckets, so 4 classes, but the encoding names 2",
    ),
    ("forest-in-format-v1.json", "model file '{path}' is invalid: a forest needs format version 2, the file says 1"),
    (
        "forest-leaf-without-counts.json",
        "model file '{path}' is invalid: tree is malformed: tree 1: node 3 has no class distribution over 4 classes",
    ),
    (
        "forest-counts-overflow.json",
        "model file '{path}' is invalid: tree is malformed: tree 2: node 4 has no class distribution over 4 classes",
    ),
    ("forest-tree-count.json", "model file '{path}' is invalid: the forest has 3 trees but its params say 4"),
    ("forest-and-tree.json", "model file '{path}' is invalid: a model holds exactly one of a tree, a non-empty ensemble or a forest"),
    (
        "too-many-partitions.toml",
        "invalid configuration: partitions (--partitions, or partitions in [split]) must be between 1 and 4096, got 100000",
    ),
    (
        "unknown-key.toml",
        "cannot read experiment file '{path}': TOML parse error at line 2, column 1\n  |\n2 | max_dept = 3\n  | ^^^^^^^^\nunknown field \
         `max_dept`, expected one of `max_depth`, `max_bins`, `min_instances_per_node`, `min_info_gain`, `impurity`, `max_memory_mb`\n",
    ),
];

#[test]
fn the_hostile_corpus_is_refused_with_exact_errors() {
    let mut names: Vec<String> =
        std::fs::read_dir(corpus("")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut listed: Vec<String> = CORPUS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(names, listed, "every corpus file has its expected error here");
    for (name, expected) in CORPUS {
        let path = corpus(name);
        let error = if name.ends_with(".json") {
            let e = ModelFile::load(&path).unwrap_err();
            assert!(matches!(e, DriverError::InvalidModel { .. }), "{name}: {e}");
            e
        } else {
            Experiment::from_file(&path).and_then(Experiment::check).unwrap_err()
        };
        assert_eq!(error.to_string(), expected.replace("{path}", &path.display().to_string()), "{name}");
    }
}

#[test]
fn the_valid_models_load() {
    for name in ["model-tree.json", "model-ensemble.json", "model-forest.json"] {
        let model = ModelFile::load(&fixture(name)).unwrap();
        let columns = vec![vec![-20.0, 5.0, 100.0]; model.file.feature_names.len()];
        assert_eq!(model.predict(&columns).unwrap().len(), 3);
    }
}

fn valid_model(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// Paths (as JSON pointers) of every number, string, bool and null in `v`.
fn scalar_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            m.iter().for_each(|(k, v)| scalar_pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| scalar_pointers(v, format!("{at}/{i}"), out)),
        _ => out.push(at),
    }
}

/// Numbers that break indexes and counts.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![0i64, 1, 2, 3, 4, 5, 7, 8, 255, 256, -1, u32::MAX as i64, i64::MAX, i64::MIN]).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.5, -0.0, 1e308, -1e308, 1e-300]).prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("")),
        Just(Value::Bool(true)),
        Just(Value::Array(Vec::new())),
    ]
}

/// A model must be refused as invalid, or load and score rows without panicking.
fn load_and_score(model: &Value) {
    let bytes = serde_json::to_vec(model).unwrap();
    match ModelFile::parse(Path::new("mutated.json"), &bytes) {
        Ok(loaded) => {
            let n = loaded.file.feature_names.len();
            let columns: Vec<Vec<f64>> = (0..n).map(|f| vec![-1e9, -15.0, 0.0, f as f64, 1e9]).collect();
            let predictions = loaded.predict(&columns).unwrap();
            assert!(predictions.iter().all(|&c| (c as usize) < loaded.file.encoding.class_names.len()));
        }
        Err(DriverError::InvalidModel { .. }) => {}
        Err(e) => panic!("not an InvalidModel error: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_models_never_panic(
        kind in prop::sample::select(vec!["model-tree.json", "model-ensemble.json", "model-forest.json"]),
        picks in prop::collection::vec((any::<prop::sample::Index>(), hostile_value()), 1..4),
    ) {
        let mut model = valid_model(kind);
        for (index, value) in picks {
            let mut pointers = Vec::new();
            scalar_pointers(&model, String::new(), &mut pointers);
            let pointer = index.get(&pointers);
            if let Some(slot) = model.pointer_mut(pointer) {
                *slot = value;
            }
        }
        load_and_score(&model);
    }

    #[test]
    fn arbitrary_bytes_are_never_a_model_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let result = ModelFile::parse(Path::new("bytes.json"), &bytes);
        let refused = matches!(result, Err(DriverError::InvalidModel { .. }));
        prop_assert!(refused, "not an InvalidModel error");
    }

    #[test]
    fn mutated_experiment_files_never_panic(
        cut in any::<prop::sample::Index>(),
        insert in prop_oneof![
            Just(String::new()),
            "[a-z_\\[\\]=\" .,0-9-]{0,24}",
            prop::sample::select(vec!["\npartitions = 4294967296\n", "\n[split]\npartitions = -1\n", "\n[tree]\nmax_bins = 0\n", "nan", "1e999", "\"\\u{0}\""]).prop_map(String::from),
        ],
        number in any::<i64>(),
    ) {
        let valid = include_str!("../../experiments/flights.toml");
        // Replace each number with a hostile one, then cut at a char boundary and insert junk.
        let text: String = valid.split_inclusive(' ').map(|w| if w.trim().parse::<f64>().is_ok() { format!("{number} ") } else { w.to_string() }).collect();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        let _ = Experiment::parse(Path::new("x.toml"), &mutated).and_then(Experiment::check);
        let _ = Experiment::parse(Path::new("x.toml"), &insert).and_then(Experiment::check);
    }
}

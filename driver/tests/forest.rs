//! Random forests end to end with real executor processes: the forest file is byte-identical
//! on any number of executors, in-process, and after an executor dies mid-run; it scores files.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Test-split confusion matrix of the default forest (20 trees, depth 5, sqrt features,
/// bootstrap) on the embedded data, seed 42.
const EXPECTED_CONFUSION: [[u64; 4]; 4] =
    [[9013, 8087, 953, 12], [5614, 10984, 2890, 91], [3415, 6023, 6196, 1658], [375, 548, 1480, 8201]];

#[test]
fn same_forest_on_1_2_4_8_executors_and_in_process_with_exact_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, local) = (tmp.path().join("sweep"), tmp.path().join("local"));
    assert_ok(&driver(&["scale", "--mode", "forest", "--executors", "1,2,4,8", "--quiet", "--out", sweep.to_str().unwrap()]));
    assert_ok(&driver(&["train", "--mode", "forest", "--in-process", "--quiet", "--out", local.to_str().unwrap()]));

    let reference = model_bytes(&local, "model-in-process-r1.json");
    for n in [1, 2, 4, 8] {
        assert!(model_bytes(&sweep, &format!("model-e{n}-r1.json")) == reference, "forest with {n} executors differs");
    }
    let report = report(&sweep);
    assert_eq!(report["mode"], "forest");
    assert_eq!(report["models_identical"], true);
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["confusion_matrix"], serde_json::json!(EXPECTED_CONFUSION));
        assert_eq!(run["growth"]["trees"], 20);
        let rows: u64 = run["executor_stats"].as_array().unwrap().iter().map(|s| s["rows_held"].as_u64().unwrap()).sum();
        assert_eq!(rows, 327346, "every row held exactly once");
    }
    let model: serde_json::Value = serde_json::from_slice(&reference).unwrap();
    assert_eq!(model["format_version"], 2);
    assert_eq!(
        model["forest"]["params"],
        serde_json::json!({"num_trees": 20, "feature_subset_strategy": "auto", "subsampling_rate": 1.0, "bootstrap": true})
    );
    assert_eq!(model["forest"]["features_per_node"], 3, "auto is sqrt(9) for a forest");
    let trees = model["forest"]["trees"].as_array().unwrap();
    assert_eq!(trees.len(), 20);
    // Bootstrap samples differ, so root counts differ between trees but stay near the 261806
    // training rows (Poisson(1) weights have mean 1).
    let roots: Vec<u64> =
        trees.iter().map(|t| t["nodes"][0]["class_counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum()).collect();
    assert!(roots.windows(2).any(|w| w[0] != w[1]), "{roots:?}");
    assert!(roots.iter().all(|&n| n.abs_diff(261806) < 3000), "{roots:?}");
}

#[test]
fn killed_executor_mid_forest_gives_the_same_forest() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let forest = ["--mode", "forest", "--num-trees", "6"];
    let mut args = vec!["train", "--in-process", "--quiet", "--out", local.to_str().unwrap()];
    args.extend(forest);
    assert_ok(&driver(&args));
    let executors: Vec<Executor> = (0..3).map(|_| Executor::start(&["--inject-task-delay-ms", "150"])).collect();
    let addrs = executors.iter().map(|e| e.addr.as_str()).collect::<Vec<_>>().join(",");
    let out = tmp.path().join("run");
    let mut args = vec!["train", "--executors", "3", "--executor-addrs", &addrs, "--out", out.to_str().unwrap()];
    args.extend(forest);
    let (status, log) = driver_with_trigger(&args, after_level(1, || executors[1].signal("-KILL")));
    assert!(status.success(), "{log}");
    assert!(log.contains("executor lost; reassigning its partitions"), "{log}");
    assert_eq!(report(&out)["runs"][0]["failures"].as_array().unwrap().len(), 1);
    assert!(model_bytes(&out, "model-e3-r1.json") == model_bytes(&local, "model-in-process-r1.json"), "forest changed after the failure");
}

#[test]
fn predict_scores_a_file_with_a_forest() {
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train");
    assert_ok(&driver(&["train", "--mode", "forest", "--num-trees", "5", "--in-process", "--quiet", "--out", train.to_str().unwrap()]));
    let model = train.join("models/model-in-process-r1.json");
    let scored = tmp.path().join("scored.csv");
    let data = fixture("flights-jan.jsonl.bz2");
    let out = predict(&model, &data, &scored);
    assert_ok(&out);
    let printed = stdout(&out);
    assert!(printed.contains("scored 3000 rows"), "{printed}");
    assert!(printed.contains("accuracy 0.5163  weighted precision 0.5630  weighted recall 0.5163  weighted F1 0.5152"), "{printed}");
}

#[test]
fn bad_forest_parameters_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let cases: [(&[&str], &str); 3] = [
        (&["--num-trees", "0"], "num_trees must be between 1 and 1000, got 0"),
        (&["--subsampling-rate", "1.5"], "subsampling_rate must be in (0, 1], got 1.5"),
        (&["--feature-subset-strategy", "half"], "feature_subset_strategy must be auto, all, sqrt, log2, onethird"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["train", "--mode", "forest", "--in-process", "--quiet", "--out", out_dir.to_str().unwrap()];
        args.extend(flags);
        let out = driver(&args);
        assert!(!out.status.success(), "{flags:?}");
        assert!(stderr(&out).contains(message), "{flags:?}: {}", stderr(&out));
        assert!(!out_dir.exists(), "nothing written for {flags:?}");
    }
}

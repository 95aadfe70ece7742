//! The whole pipeline on the embedded data with real executor processes: the model is
//! byte-identical for 1, 2, 3 and 4 executors and in-process, with exact metrics.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Test-split confusion matrix of the depth-5 reference tree on the embedded data, seed 42.
const EXPECTED_CONFUSION: [[u64; 4]; 4] = [[9885, 7072, 1107, 1], [6507, 9958, 3098, 16], [3797, 5599, 7253, 643], [408, 531, 2255, 7410]];

#[test]
fn same_model_on_1_2_3_4_executors_and_in_process_with_exact_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (sweep, local) = (tmp.path().join("sweep"), tmp.path().join("local"));
    let out = driver(&["scale", "--executors", "1,2,3,4", "--quiet", "--out", sweep.to_str().unwrap()]);
    assert_ok(&out);
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", local.to_str().unwrap()]));

    let reference = model_bytes(&local, "model-in-process-r1.json");
    for n in 1..=4 {
        assert!(model_bytes(&sweep, &format!("model-e{n}-r1.json")) == reference, "model with {n} executors differs");
    }
    let report = report(&sweep);
    assert_eq!(report["models_identical"], true);
    assert_eq!(report["rows"], serde_json::json!({"read": 327346, "dropped_null_label": 0, "train": 261806, "test": 65540}));
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["executors"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let total: u64 = EXPECTED_CONFUSION.iter().flatten().sum();
    let correct: u64 = (0..4).map(|i| EXPECTED_CONFUSION[i][i]).sum();
    for run in runs {
        assert_eq!(run["confusion_matrix"], serde_json::json!(EXPECTED_CONFUSION));
        assert_eq!(run["accuracy"].as_f64().unwrap(), correct as f64 / total as f64);
        // Within 0.02 of the reference tools' weighted F1 (about 0.525) on this data.
        let f1 = run["weighted_f1"].as_f64().unwrap();
        assert!((f1 - 0.525).abs() < 0.02, "weighted F1 {f1}");
        assert_eq!(run["model_sha256"], runs[0]["model_sha256"]);
        let stats = run["executor_stats"].as_array().unwrap();
        assert_eq!(stats.len() as u64, run["executors"].as_u64().unwrap());
        let rows: u64 = stats.iter().map(|s| s["rows_held"].as_u64().unwrap()).sum();
        assert_eq!(rows, 327346, "every row held exactly once");
        for s in stats {
            assert!(s["tasks"].as_u64().unwrap() > 0 && s["peak_heap_bytes"].as_u64().unwrap() > 0, "{s}");
        }
        assert!(run["driver_peak_heap_bytes"].as_u64().unwrap() > 0);
        assert_eq!(run["growth"]["tree_nodes"], 63);
    }
    // The table and the other outputs.
    let table = stdout(&out);
    assert!(table.contains("executors") && table.contains("0.5265"), "{table}");
    let csv = std::fs::read_to_string(sweep.join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with("executors,repetition,mode,train_seconds,total_seconds"));
    let svg = std::fs::read_to_string(sweep.join("scaling.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Time vs executors (report)") && svg.contains("Training speedup"));
}

#[test]
fn executors_that_read_their_own_rows_train_the_same_tree_and_forest() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["exact", "forest"] {
        let (read, local) = (tmp.path().join(format!("read-{mode}")), tmp.path().join(format!("local-{mode}")));
        let read_args =
            ["scale", "--mode", mode, "--read-by", "executors", "--executors", "1,3", "--quiet", "--out", read.to_str().unwrap()];
        assert_ok(&driver(&read_args));
        assert_ok(&driver(&["train", "--mode", mode, "--in-process", "--quiet", "--out", local.to_str().unwrap()]));
        let reference = model_bytes(&local, "model-in-process-r1.json");
        for n in [1, 3] {
            assert!(model_bytes(&read, &format!("model-e{n}-r1.json")) == reference, "{mode} model read by {n} executors differs");
        }
        let report = report(&read);
        assert_eq!(report["rows"], serde_json::json!({"read": 327346, "dropped_null_label": 0, "train": 261806, "test": 65540}));
        for run in report["runs"].as_array().unwrap() {
            let rows: u64 = run["executor_stats"].as_array().unwrap().iter().map(|s| s["rows_held"].as_u64().unwrap()).sum();
            assert_eq!(rows, 327346, "every row read by exactly one executor");
            assert_eq!(run["traffic"]["partition_bytes_sent"], 0, "the driver shipped rows");
            if mode == "exact" {
                assert_eq!(run["confusion_matrix"], serde_json::json!(EXPECTED_CONFUSION));
            }
        }
    }
}

#[test]
fn tree_matches_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", tmp.path().to_str().unwrap()]));
    let model: serde_json::Value = serde_json::from_slice(&model_bytes(tmp.path(), "model-in-process-r1.json")).unwrap();
    let tree: canopy_tree::Tree = serde_json::from_value(model["tree"].clone()).unwrap();
    let names: Vec<String> = serde_json::from_value(model["feature_names"].clone()).unwrap();
    let dump = tree.dump(&names);
    let snapshot = fixture("flights-2013-depth5.tree.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &dump).unwrap();
    }
    assert_eq!(dump, std::fs::read_to_string(&snapshot).unwrap(), "tree changed; UPDATE_SNAPSHOTS=1 to accept");
    assert_eq!(model["format"], "canopy-model");
    assert_eq!(model["encoding"]["class_names"], serde_json::json!(["[-inf,-15)", "[-15,0)", "[0,30)", "[30,inf)"]));
}

#[test]
fn reference_jsonl_bz2_gz_and_csv_give_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for name in ["flights-jan.jsonl.bz2", "flights-jan.jsonl.gz", "flights-jan.csv"] {
        let out = tmp.path().join(name);
        let data = fixture(name);
        assert_ok(&driver(&["train", "--executors", "2", "--quiet", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]));
        let r = report(&out);
        assert_eq!(r["rows"]["read"], 3000, "{name}");
        assert_eq!(
            r["runs"][0]["confusion_matrix"],
            serde_json::json!([[35, 39, 37, 0], [25, 58, 118, 0], [11, 26, 190, 3], [0, 1, 27, 58]])
        );
        models.push(model_bytes(&out, "model-e2-r1.json"));
    }
    assert!(models.windows(2).all(|w| w[0] == w[1]), "formats disagree");
}

#[test]
fn predict_scores_a_file_with_the_saved_model() {
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train");
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", train.to_str().unwrap()]));
    let model = train.join("models/model-in-process-r1.json");
    let scored = tmp.path().join("scored.csv");
    let data = fixture("flights-jan.jsonl.bz2");
    let out = predict(&model, &data, &scored);
    assert_ok(&out);
    let printed = stdout(&out);
    assert!(printed.contains("scored 3000 rows"), "{printed}");
    assert!(printed.contains("accuracy 0.4980  weighted precision 0.5521  weighted recall 0.4980  weighted F1 0.5050"), "{printed}");
    let csv = std::fs::read_to_string(&scored).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "row,prediction,predicted_class,label,actual_class");
    // First fixture row: DepDelay 2, Distance 1400, ArrDelay 11 (class [0,30)).
    assert_eq!(lines[1], r#"1,0,"[-inf,-15)",2,"[0,30)""#);
    assert_eq!(lines.len(), 3001);
}

#[test]
fn ensemble_mode_votes_and_says_its_accuracy_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = fixture("flights-jan.csv");
    let out = driver(&[
        "scale",
        "--mode",
        "ensemble",
        "--executors",
        "1,2",
        "--quiet",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert_ok(&out);
    let r = report(tmp.path());
    assert_eq!(r["mode"], "ensemble");
    assert!(r["note"].as_str().unwrap().contains("changes with the executor count"));
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let cm: Vec<Vec<u64>> = serde_json::from_value(run["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.iter().flatten().sum::<u64>(), 628, "every test row scored once");
    }
    let model: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("models/model-e2-r1.json")).unwrap()).unwrap();
    assert_eq!(model["ensemble"].as_array().unwrap().len(), 2, "one linfa tree per executor");
}

#[test]
fn gen_data_resamples_deterministically_and_keeps_the_delay_correlation() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.parquet"), tmp.path().join("b.parquet"));
    for path in [&a, &b] {
        let out = driver(&["gen-data", "--rows", "20000", "--seed", "3", "--out", path.to_str().unwrap()]);
        assert_ok(&out);
        let line = stdout(&out);
        assert!(line.starts_with("wrote 20000 rows resampled from 327346 to "), "{line}");
        let corr: f64 = line.split("correlation ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!((0.89..0.94).contains(&corr), "DepDelay/ArrDelay correlation {corr}");
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "same seed, same bytes");
    let trained = tmp.path().join("trained");
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--data", a.to_str().unwrap(), "--out", trained.to_str().unwrap()]));
    assert_eq!(report(&trained)["rows"]["read"], 20000);
}

//! Bad input: one clear message naming the file, column, row or address; a non-zero exit;
//! no panic; nothing written to --out.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

const HEADER: &str = "ArrDelay,Carrier,DayOfMonth,DayOfWeek,DayOfYear,DepDelay,Dest,Distance,Origin";
const ROW: &str = "5.0,UA,1,2,1,3.0,IAH,1400.0,EWR";

fn csv(dir: &Path, name: &str, rows: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs `train` with `args` (plus --out), expects failure with `expected` in the error line.
fn fails_with(args: &[&str], expected: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut all = vec!["train", "--executors", "1", "--quiet", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = driver(&all);
    let err = stderr(&output);
    assert!(!output.status.success(), "should fail: {args:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: ") && err.contains(expected), "expected {expected:?} in:\n{err}");
    assert!(!out.exists(), "--out must stay untouched");
}

#[test]
fn missing_file() {
    fails_with(&["--data", "/no/such/flights.parquet"], "cannot read '/no/such/flights.parquet': No such file or directory");
}

#[test]
fn directory_instead_of_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d.csv");
    std::fs::create_dir(&dir).unwrap();
    fails_with(&["--data", dir.to_str().unwrap()], "d.csv': not a regular file");
}

#[test]
fn unknown_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "flights.xlsx", &[HEADER, ROW]);
    fails_with(&["--data", &path], "flights.xlsx' has an unknown extension; expected .parquet, .csv, .json");
}

#[test]
fn missing_column() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &["ArrDelay,Carrier,DayOfMonth,DayOfWeek,DayOfYear,DepDelay,Dest,Origin", "5,UA,1,2,1,3,IAH,EWR"]);
    fails_with(&["--data", &path], "has no column 'Distance' (needed as a numeric feature); its columns are: ArrDelay, Carrier");
}

#[test]
fn non_numeric_value_names_row_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &[HEADER, ROW, ROW, "5.0,UA,1,2,1,late,IAH,1400.0,EWR", ROW]);
    fails_with(&["--data", &path], "column 'DepDelay' of");
    fails_with(&["--data", &path], "has a non-numeric value 'late' at row 3; expected a number");
}

#[test]
fn mistyped_column() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &[&format!("{HEADER},When"), &format!("{ROW},2013-01-01"), &format!("{ROW},2013-01-02")]);
    fails_with(&["--data", &path, "--numeric", "DepDelay,When"], "column 'When' of");
    fails_with(&["--data", &path, "--numeric", "DepDelay,When"], "has type Date32, expected a number");
}

#[test]
fn null_feature_names_its_row() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &[HEADER, ROW, "5.0,UA,1,2,1,3.0,IAH,,EWR"]);
    fails_with(&["--data", &path], "column 'Distance' of");
    fails_with(&["--data", &path], "is null at row 2; features must not be null");
}

#[test]
fn labels_all_null() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &[HEADER, ",UA,1,2,1,3.0,IAH,1400.0,EWR", ",UA,1,2,1,3.0,IAH,1400.0,EWR"]);
    fails_with(&["--data", &path], "label column 'ArrDelay' of");
    fails_with(&["--data", &path], "is null in every row");
}

#[test]
fn executors_read_their_own_rows_of_parquet_files_in_exact_and_forest_modes_only() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &[HEADER]);
    fails_with(
        &["--read-by", "executors", "--data", &path],
        &format!("invalid configuration: executors read their own rows of Parquet files only; '{path}' is not one (use --read-by driver)"),
    );
    fails_with(
        &["--read-by", "executors", "--mode", "ensemble"],
        "invalid configuration: executors read their own rows in the exact and forest modes; the ensemble's trees depend on the driver's partitions",
    );
}

#[test]
fn empty_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let path = csv(tmp.path(), "f.csv", &[HEADER]);
    fails_with(&["--data", &path], "has no rows left (the file has no data rows)");
}

#[test]
fn zero_executors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = driver(&["scale", "--executors", "0,2", "--quiet", "--out", out.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("error: invalid configuration: executor counts must be at least 1, got [0, 2]"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
}

#[test]
fn unreachable_executor() {
    fails_with(&["--executor-addrs", "127.0.0.1:1", "--connect-timeout-seconds", "2"], "cannot reach executor at 127.0.0.1:1");
}

#[test]
fn executor_of_another_protocol_version() {
    let executor = Executor::start(&["--inject-protocol-version", "99"]);
    fails_with(
        &["--executor-addrs", &executor.addr],
        &format!(
            "executor at {} refused the connection: protocol version mismatch: this executor speaks canopy.v1 protocol 99, the driver speaks {}",
            executor.addr,
            canopy_proto::PROTOCOL_VERSION
        ),
    );
}

#[test]
fn bad_parameters_and_experiment_files() {
    fails_with(&["--max-bins", "1"], "invalid training parameters: max_bins must be between 2 and 256");
    fails_with(&["--test-fraction", "1.5"], "test_fraction must be in (0, 1), got 1.5");
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.toml");
    std::fs::write(&exp, "[tree]\nmax_dept = 3\n").unwrap();
    fails_with(&["--experiment", exp.to_str().unwrap()], "cannot read experiment file");
    fails_with(&["--experiment", exp.to_str().unwrap()], "unknown field `max_dept`");
}

#[test]
fn bad_model_file_for_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.json");
    std::fs::write(&model, "{\"format\": \"something-else\"}").unwrap();
    let out = tmp.path().join("scored.csv");
    let data = fixture("flights-jan.csv");
    let output = driver(&["predict", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("model file '"), "{}", stderr(&output));
    assert!(!out.exists());
}

#[test]
fn gen_data_needs_the_reference_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let source = csv(tmp.path(), "f.csv", &["ArrDelay,DepDelay", "1,2"]);
    let out = tmp.path().join("gen.parquet");
    let output = driver(&["gen-data", "--rows", "10", "--source", &source, "--out", out.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("has no column 'CRSArrTime' (needed as a column of the reference schema)"), "{}", stderr(&output));
    assert!(!out.exists());
}

/// Runs the driver with `args`; expects failure with exactly `expected` as the error line.
fn fails_exactly(args: &[&str], expected: &str) {
    let output = driver(args);
    let err = stderr(&output);
    assert!(!output.status.success(), "should fail: {args:?}");
    assert_eq!(err.trim_end().lines().last(), Some(format!("error: {expected}").as_str()), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn too_many_partitions() {
    fails_with(
        &["--partitions", "100000"],
        "invalid configuration: partitions (--partitions, or partitions in [split]) must be between 1 and 4096, got 100000",
    );
    fails_with(&["--partitions", "0"], "must be between 1 and 4096, got 0");
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.toml");
    std::fs::write(&exp, "[split]\npartitions = 4097\n").unwrap();
    fails_with(&["--experiment", exp.to_str().unwrap()], "must be between 1 and 4096, got 4097");
}

#[test]
fn empty_or_foreign_parquet_file() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.parquet");
    std::fs::write(&empty, "").unwrap();
    fails_with(&["--data", empty.to_str().unwrap()], &format!("cannot read '{}': the file is empty (0 bytes)", empty.display()));
    let text = csv(tmp.path(), "text.parquet", &[HEADER, ROW]);
    fails_with(
        &["--data", &text],
        &format!("cannot read '{text}': not a Parquet file (it does not start and end with the magic bytes PAR1)"),
    );
}

#[test]
fn unparsable_csv_value_past_the_inferred_rows_names_its_column() {
    // DataFusion infers the column types from the first 1000 rows; a bad value after them
    // fails the scan itself, not the driver's own checks.
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = vec![HEADER; 1 + 1039];
    rows[1..].fill(ROW);
    rows.push("5.0,UA,1,2,1,late,IAH,1400.0,EWR");
    rows.extend([ROW; 20]);
    let path = csv(tmp.path(), "deep.csv", &rows);
    fails_with(
        &["--data", &path],
        &format!(
            "column 'DepDelay' of '{path}' cannot be read at row 1040: 'late' is not a valid Float64, the type inferred from the file's first 1000 rows"
        ),
    );
}

#[test]
fn outputs_are_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("scaling.svg")).unwrap();
    std::fs::write(out.join("report.json"), "an earlier report").unwrap();
    let data = fixture("flights-jan.csv");
    fails_exactly(
        &["train", "--in-process", "--quiet", "--out", out.to_str().unwrap(), "--data", data.to_str().unwrap()],
        &format!("cannot write '{}': Is a directory (os error 21)", out.join("scaling.svg").display()),
    );
    // As it was: the earlier report, the directory in the way, and nothing else.
    let mut left: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["report.json", "scaling.svg"]);
    assert_eq!(std::fs::read_to_string(out.join("report.json")).unwrap(), "an earlier report");
    assert_eq!(std::fs::read_dir(out.join("scaling.svg")).unwrap().count(), 0);

    // A model file in the way: the last file written, so every other one is rolled back.
    let out = tmp.path().join("out2");
    std::fs::create_dir_all(out.join("models/model-in-process-r1.json")).unwrap();
    fails_exactly(
        &["train", "--in-process", "--quiet", "--out", out.to_str().unwrap(), "--data", data.to_str().unwrap()],
        &format!("cannot write '{}': Is a directory (os error 21)", out.join("models/model-in-process-r1.json").display()),
    );
    assert!(!out.join("report.json").exists() && !out.join("report.csv").exists() && !out.join("scaling.svg").exists());
}

/// Runs `predict` with a model of the hostile corpus; expects exactly `reason`.
fn predict_refuses(model: &str, data: &Path, reason: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture(&format!("hostile/{model}"));
    let out = tmp.path().join("scored.csv");
    fails_exactly(
        &["predict", "--quiet", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &format!("model file '{}' is invalid: {reason}", model.display()),
    );
    assert!(!out.exists());
}

#[test]
fn predict_refuses_a_leaf_class_beyond_the_class_list() {
    let tmp = tempfile::tempdir().unwrap();
    // With and without the label: unlabelled data used to get empty class names.
    let unlabelled = csv(tmp.path(), "u.csv", &["DepDelay,Distance", "3.0,1400.0", "40.0,200.0"]);
    for data in [fixture("flights-jan.csv"), unlabelled.into()] {
        predict_refuses("class-out-of-range.json", &data, "tree is malformed: node 3 predicts class 7 of 4");
        predict_refuses("tree-claims-more-classes.json", &data, "the tree has 8 classes but the model has 4");
    }
}

#[test]
fn predict_refuses_an_ensemble_tree_outside_the_features() {
    let data = fixture("flights-jan.csv");
    predict_refuses(
        "ensemble-feature-out-of-range.json",
        &data,
        "ensemble tree 0: node 0 splits on feature 5 but the model has 2 features",
    );
}

//! Executors that die or go silent in the middle of a run: real processes, real signals.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// The reference model's bytes, trained in-process.
fn reference_model(tmp: &std::path::Path) -> Vec<u8> {
    let out = tmp.join("reference");
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", out.to_str().unwrap()]));
    std::fs::read(out.join("models/model-in-process-r1.json")).unwrap()
}

/// Executors slowed down so that a run lasts long enough to be interrupted.
fn slow_executors(n: usize) -> Vec<Executor> {
    (0..n).map(|_| Executor::start(&["--inject-task-delay-ms", "150"])).collect()
}

fn addrs(executors: &[Executor]) -> String {
    executors.iter().map(|e| e.addr.as_str()).collect::<Vec<_>>().join(",")
}

#[test]
fn killed_executor_is_replaced_and_the_model_is_unchanged() {
    killed_executor_is_replaced(&[]);
}

/// The survivors read the lost executor's partitions again from the file.
#[test]
fn killed_executor_that_read_its_own_rows_is_replaced() {
    killed_executor_is_replaced(&["--read-by", "executors"]);
}

fn killed_executor_is_replaced(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_model(tmp.path());
    let executors = slow_executors(3);
    let out = tmp.path().join("run");
    let addrs = addrs(&executors);
    let mut args = vec!["train", "--executors", "3", "--executor-addrs", &addrs, "--out", out.to_str().unwrap()];
    args.extend(extra);
    let (status, log) = driver_with_trigger(&args, after_level(1, || executors[1].signal("-KILL")));
    assert!(status.success(), "{log}");
    assert!(log.contains("executor lost; reassigning its partitions"), "{log}");
    let report = report(&out);
    let run = &report["runs"][0];
    let failures = run["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["partitions_reassigned"], 8);
    assert!(run["retries"].as_u64().unwrap() >= 1);
    assert_eq!(run["executor_stats"][1]["alive_at_end"], false);
    let rows: u64 = run["executor_stats"].as_array().unwrap().iter().map(|s| s["rows_held"].as_u64().unwrap()).sum();
    assert_eq!(rows, 327346, "survivors hold every row");
    assert!(std::fs::read(out.join("models/model-e3-r1.json")).unwrap() == reference, "model changed after the failure");
}

#[test]
fn silent_executor_is_declared_dead_by_heartbeat() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_model(tmp.path());
    let executors = slow_executors(2);
    let out = tmp.path().join("run");
    let addrs = addrs(&executors);
    let args = [
        "train",
        "--executors",
        "2",
        "--executor-addrs",
        &addrs,
        "--out",
        out.to_str().unwrap(),
        "--heartbeat-interval-seconds",
        "0.2",
        "--heartbeat-timeout-seconds",
        "1",
    ];
    let (status, log) = driver_with_trigger(&args, after_level(0, || executors[0].signal("-STOP")));
    assert!(status.success(), "{log}");
    let report = report(&out);
    let failure = &report["runs"][0]["failures"][0];
    assert_eq!(failure["error"], "heartbeats stopped", "{failure}");
    assert!(std::fs::read(out.join("models/model-e2-r1.json")).unwrap() == reference);
}

#[test]
fn losing_every_executor_is_a_clear_error_with_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let executors = slow_executors(1);
    let out = tmp.path().join("run");
    let args = ["train", "--executors", "1", "--executor-addrs", &executors[0].addr, "--out", out.to_str().unwrap()];
    let (status, log) = driver_with_trigger(&args, after_level(0, || executors[0].signal("-KILL")));
    assert!(!status.success());
    let last = log.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: no executor left: all 1 failed"), "{log}");
    assert!(!out.exists(), "nothing written after a failed run");
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn spawned_executors_stop_when_the_driver_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = driver_command(&[
        "train",
        "--executors",
        "2",
        "--executor-arg=--inject-task-delay-ms",
        "--executor-arg=300",
        "--out",
        out.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut pids = Vec::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(pid) = line.split("pid=").nth(1).and_then(|p| p.split_whitespace().next()?.parse::<u32>().ok()) {
            pids.push(pid);
        }
        if line.contains("tree level done") {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both executors connected");
    // SIGKILL: the driver runs no cleanup at all; the executors notice by themselves.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|&p| running(p)) {
        assert!(std::time::Instant::now() < deadline, "executors {pids:?} outlived their driver");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!out.exists(), "nothing written by a killed run");
}

//! Elastic executors with real processes on real sockets: executors register with the driver
//! (before or after it starts), join a running job, leave it on SIGTERM, and follow an
//! autoscaler that reads the driver's metric. Each executor runs on its own host (a network
//! namespace with its own address when the tests run as root, a 127.0.0.x address otherwise).
//! The model's SHA-256 must equal the in-process one every time.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

/// A generated dataset (the embedded flights resampled), made once for this test binary.
fn dataset() -> &'static Path {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flights-200k.parquet");
        assert_ok(&driver(&["gen-data", "--rows", "200000", "--seed", "7", "--out", path.to_str().unwrap()]));
        (dir, path)
    });
    path
}

/// Deep enough that training takes several seconds with slowed executors.
const TREE: [&str; 2] = ["--max-depth", "8"];
/// Each histogram task sleeps this long, so a run lasts long enough to change it mid-way.
const SLOW: [&str; 2] = ["--inject-task-delay-ms", "250"];

fn data_args() -> Vec<String> {
    let mut args = vec!["--data".to_string(), dataset().to_str().unwrap().to_string()];
    args.extend(TREE.iter().map(|s| s.to_string()));
    args
}

/// The in-process model's SHA-256 on the generated data.
fn reference_sha(tmp: &Path) -> String {
    let out = tmp.join("reference");
    let mut args = vec!["train", "--in-process", "--quiet", "--out", out.to_str().unwrap()];
    let data = data_args();
    args.extend(data.iter().map(String::as_str));
    assert_ok(&driver(&args));
    report(&out)["runs"][0]["model_sha256"].as_str().unwrap().to_string()
}

/// Where the driver listens so that every host reaches it.
fn listen_addr(hosts: &[Host], port: u16) -> String {
    if hosts.iter().any(Host::is_namespace) { format!("0.0.0.0:{port}") } else { format!("127.0.0.1:{port}") }
}

fn executor_args<'a>(host: &Host, port: u16, id: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args = vec!["--driver".to_string(), format!("{}:{port}", host.gateway), "--executor-id".into(), id.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start_registered(host: &Host, port: u16, id: &str, extra: &[&str]) -> Executor {
    let args = executor_args(host, port, id, extra);
    Executor::start_on(host, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn wait_exit(executor: &mut Executor, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = executor.child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn executors_join_a_running_job_and_the_model_is_unchanged() {
    executors_join_a_running_job(&[]);
}

/// Joiners read the partitions that move to them from the file: nothing is shipped.
#[test]
fn executors_that_read_their_own_rows_join_a_running_job() {
    executors_join_a_running_job(&["--read-by", "executors"]);
}

fn executors_join_a_running_job(extra: &[&str]) {
    let reads = extra.contains(&"executors");
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_sha(tmp.path());
    let hosts = hosts(3);
    let port = free_port();
    // Started before the driver: it retries until the driver is up.
    let first = start_registered(&hosts[0], port, "executor-a", &SLOW);
    let out = tmp.path().join("run");
    let listen = listen_addr(&hosts, port);
    let mut args = vec!["train", "--listen", &listen, "--min-executors", "1", "--max-executors", "3", "--out", out.to_str().unwrap()];
    let data = data_args();
    args.extend(data.iter().map(String::as_str));
    args.extend(extra);
    let mut late = Vec::new();
    let (status, log) = driver_with_trigger(
        &args,
        after_level(0, || {
            late.push(start_registered(&hosts[1], port, "executor-b", &SLOW));
            late.push(start_registered(&hosts[2], port, "executor-c", &SLOW));
        }),
    );
    assert!(status.success(), "{log}");
    let report = report(&out);
    let run = &report["runs"][0];
    assert_eq!(run["model_sha256"].as_str().unwrap(), reference, "the model changed when executors joined");
    assert_eq!(run["failures"].as_array().unwrap().len(), 0, "{run}");
    let joins: Vec<&str> = run["membership"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["change"] == "join")
        .map(|e| e["executor_id"].as_str().unwrap())
        .collect();
    assert_eq!(joins, ["executor-b", "executor-c"], "{}", run["membership"]);
    let stats = run["executor_stats"].as_array().unwrap();
    assert_eq!(stats.iter().map(|s| s["executor_id"].as_str().unwrap()).collect::<Vec<_>>(), ["executor-a", "executor-b", "executor-c"]);
    for s in stats {
        assert!(s["tasks"].as_u64().unwrap() > 0, "every executor worked: {s}");
        assert!(s["registration_to_first_task_seconds"].as_f64().is_some(), "{s}");
    }
    assert!(run["partitions_moved"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["bytes_moved"].as_u64().unwrap() == 0, reads, "{run}");
    let rows: u64 = stats.iter().map(|s| s["rows_held"].as_u64().unwrap()).sum();
    assert_eq!(rows, 200000, "every row held exactly once at the end");
    drop(first);
}

#[test]
fn sigterm_decommissions_an_executor_without_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_sha(tmp.path());
    let hosts = hosts(3);
    let port = free_port();
    let mut executors: Vec<Executor> =
        ["executor-a", "executor-b", "executor-c"].iter().zip(&hosts).map(|(id, host)| start_registered(host, port, id, &SLOW)).collect();
    let out = tmp.path().join("run");
    let listen = listen_addr(&hosts, port);
    let mut args = vec!["train", "--listen", &listen, "--min-executors", "3", "--out", out.to_str().unwrap()];
    let data = data_args();
    args.extend(data.iter().map(String::as_str));
    let mut signalled = None;
    let (status, log) = driver_with_trigger(
        &args,
        after_level(1, || {
            executors[1].signal("-TERM");
            signalled = Some(Instant::now());
        }),
    );
    assert!(status.success(), "{log}");
    let exit = wait_exit(&mut executors[1], Duration::from_secs(30)).expect("the executor exits within its grace period");
    assert!(exit.success(), "a decommissioned executor exits 0, got {exit}");
    assert!(signalled.unwrap().elapsed() < Duration::from_secs(30));
    let report = report(&out);
    let run = &report["runs"][0];
    assert_eq!(run["model_sha256"].as_str().unwrap(), reference);
    assert_eq!(run["failures"].as_array().unwrap().len(), 0, "a decommission is not a failure: {}", run["failures"]);
    assert_eq!(run["retries"], 0);
    let leave = run["membership"].as_array().unwrap().iter().find(|e| e["change"] == "leave").expect("a leave event");
    assert_eq!(leave["executor_id"], "executor-b");
    assert!(leave["partitions_moved"].as_u64().unwrap() > 0, "{leave}");
    let stats = run["executor_stats"].as_array().unwrap();
    let leaver = stats.iter().find(|s| s["executor_id"] == "executor-b").unwrap();
    assert_eq!((leaver["left"].as_bool(), leaver["alive_at_end"].as_bool()), (Some(true), Some(false)));
    assert!(leaver["tasks"].as_u64().unwrap() > 0, "its work before leaving is reported: {leaver}");
    let rows: u64 = stats.iter().filter(|s| s["alive_at_end"] == true).map(|s| s["rows_held"].as_u64().unwrap()).sum();
    assert_eq!(rows, 200000, "the others hold every row");
}

#[test]
fn a_sweep_on_a_pool_takes_the_first_n_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = hosts(2);
    let port = free_port();
    let _executors: Vec<Executor> =
        ["executor-a", "executor-b"].iter().zip(&hosts).map(|(id, host)| start_registered(host, port, id, &[])).collect();
    let out = tmp.path().join("sweep");
    let listen = listen_addr(&hosts, port);
    let output = driver(&["scale", "--executors", "1,2", "--listen", &listen, "--quiet", "--out", out.to_str().unwrap()]);
    assert_ok(&output);
    let report = report(&out);
    assert_eq!(report["models_identical"], true);
    let ids = |run: &serde_json::Value| -> Vec<String> {
        run["executor_stats"].as_array().unwrap().iter().map(|s| s["executor_id"].as_str().unwrap().to_string()).collect()
    };
    // Both registered before the sweep (in either order): the 1-executor run takes the first,
    // the 2-executor run both, the first first.
    let (one, two) = (ids(&report["runs"][0]), ids(&report["runs"][1]));
    assert_eq!(one.len(), 1);
    assert_eq!(two.len(), 2);
    assert_eq!(one[0], two[0]);
    assert!(two.contains(&"executor-a".to_string()) && two.contains(&"executor-b".to_string()));
}

#[test]
fn an_executor_gives_up_when_no_driver_answers() {
    let port = free_port();
    let started = Instant::now();
    let output =
        executor_command().args(["--driver", &format!("127.0.0.1:{port}"), "--driver-wait-seconds", "1", "--quiet"]).output().unwrap();
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = stderr(&output);
    assert!(err.contains(&format!("error: no driver answered at 127.0.0.1:{port} within")), "{err}");
}

#[test]
fn registrations_are_refused_with_both_sides_named() {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let listen = format!("127.0.0.1:{port}");
    let mut driver = driver_command(&[
        "train",
        "--listen",
        &listen,
        "--min-executors",
        "2",
        "--registration-timeout-seconds",
        "30",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let first = Executor::start(&["--driver", &listen, "--executor-id", "twin"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use canopy_proto::v1::driver_client::DriverClient;
        use canopy_proto::v1::{ExecutorHeartbeatRequest, RegisterExecutorRequest};
        let deadline = Instant::now() + Duration::from_secs(20);
        let security = test_security();
        let channel = loop {
            if let Ok(channel) = security.endpoint(&listen).unwrap().connect().await {
                break channel;
            }
            assert!(Instant::now() < deadline, "the driver never listened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Without the token nothing is answered.
        let err = DriverClient::new(channel.clone()).executor_heartbeat(ExecutorHeartbeatRequest { executor_id: "twin".into() }).await;
        assert_eq!(err.unwrap_err().code(), tonic::Code::Unauthenticated);
        let mut client = DriverClient::new(security.authorize(channel));
        while !client.executor_heartbeat(ExecutorHeartbeatRequest { executor_id: "twin".into() }).await.unwrap().into_inner().known {
            assert!(Instant::now() < deadline, "the first executor never registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let request = |id: &str, advertise: &str, protocol_version| RegisterExecutorRequest {
            executor_id: id.into(),
            advertise_addr: advertise.into(),
            protocol_version,
            cores: 1,
            memory_bytes: 0,
        };
        let err = client.register_executor(request("old", "127.0.0.1:1", 1)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            err.message(),
            format!(
                "driver at {listen} refuses executor 'old' at 127.0.0.1:1: it speaks canopy.v1 protocol 1, this driver speaks {}",
                canopy_proto::PROTOCOL_VERSION
            )
        );
        let err = client.register_executor(request("far", "127.0.0.1:1", canopy_proto::PROTOCOL_VERSION)).await.unwrap_err();
        assert!(
            err.message().starts_with(&format!(
                "driver at {listen} refuses executor 'far' at 127.0.0.1:1: the driver cannot reach it at its advertised address"
            )),
            "{}",
            err.message()
        );
        let err = client.register_executor(request("", "127.0.0.1:1", canopy_proto::PROTOCOL_VERSION)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // The same process again (its first answer lost): registered already, not refused.
        client.register_executor(request("twin", &first.addr, canopy_proto::PROTOCOL_VERSION)).await.unwrap();
    });
    // A second executor of the same name is refused, and says so.
    let twin =
        executor_command().args(["--listen", "127.0.0.1:0", "--driver", &listen, "--executor-id", "twin", "--quiet"]).output().unwrap();
    assert!(!twin.status.success());
    let err = stderr(&twin);
    assert!(err.contains(&format!("the driver at {listen} refused executor 'twin'")), "{err}");
    assert!(err.contains(&format!("an executor with this id is registered already at {}", first.addr)), "{err}");
    // A restart of a dead executor under the same id replaces its registration.
    drop(first);
    let mut restarted = Executor::start(&["--driver", &listen, "--executor-id", "twin"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(restarted.child.try_wait().unwrap().is_none(), "the restarted executor was refused");
    let _ = driver.kill();
    let _ = driver.wait();
}

/// An autoscaler inside the test: every half second it reads `canopy_driver_executors_wanted`
/// from the driver and starts or stops (SIGTERM) executors to match, at most 3, for at most
/// two minutes. The job must finish with the reference model, and the executor count must have
/// followed the metric up to 3 and back down to the idle minimum.
#[test]
fn an_autoscaler_following_the_wanted_metric_scales_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_sha(tmp.path());
    let hosts = hosts(3);
    let (port, metrics_port) = (free_port(), free_port());
    let out = tmp.path().join("run");
    let listen = listen_addr(&hosts, port);
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut args = vec![
        "train",
        "--listen",
        &listen,
        "--min-executors",
        "1",
        "--max-executors",
        "3",
        "--metrics-listen",
        &metrics_addr,
        "--linger-seconds",
        "4",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    let data = data_args();
    args.extend(data.iter().map(String::as_str));
    let mut driver = driver_command(&args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let ids = ["executor-a", "executor-b", "executor-c"];
    let mut running: Vec<Executor> = Vec::new();
    let mut stopped: Vec<Executor> = Vec::new();
    let mut trace = Vec::new();
    let started = Instant::now();
    let driver_status = loop {
        if let Some(status) = driver.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "bounded in time:\n{}", trace.join("\n"));
        let wanted = metric(&metrics_addr, "canopy_driver_executors_wanted");
        let registered = metric(&metrics_addr, "canopy_driver_executors_registered");
        if let Some(wanted) = wanted {
            let wanted = (wanted as usize).min(ids.len());
            if running.len() < wanted {
                let k = running.len();
                running.push(start_registered(&hosts[k], port, ids[k], &SLOW));
            } else if running.len() > wanted {
                let last = running.pop().unwrap();
                last.signal("-TERM");
                stopped.push(last);
            }
        }
        trace.push(format!(
            "{:5.1} s  wanted {wanted:?}  registered {registered:?}  running {}",
            started.elapsed().as_secs_f64(),
            running.len()
        ));
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("autoscaler trace:\n{}", trace.join("\n"));
    assert!(driver_status.success(), "{}", trace.join("\n"));
    for mut e in stopped {
        let status = wait_exit(&mut e, Duration::from_secs(30)).expect("a stopped executor exits");
        assert!(status.success(), "scaled-down executors exit 0");
    }
    let report = report(&out);
    let run = &report["runs"][0];
    assert_eq!(run["model_sha256"].as_str().unwrap(), reference, "{}", trace.join("\n"));
    assert_eq!(run["failures"].as_array().unwrap().len(), 0);
    assert_eq!(run["executor_stats"].as_array().unwrap().len(), 3, "the job grew to 3 executors:\n{}", trace.join("\n"));
    assert!(trace.iter().any(|l| l.contains("wanted Some(3.0)") && l.ends_with("running 3")), "scaled up to 3:\n{}", trace.join("\n"));
    // The last sample the driver answered (it closes /metrics just before it exits, so a final
    // poll may find nothing): the job ended idle, wanting and holding the minimum.
    let last_answered = trace.iter().rev().find(|l| !l.contains("wanted None")).unwrap();
    assert!(last_answered.contains("wanted Some(1.0)  registered Some(1.0)"), "idle again:\n{}", trace.join("\n"));
    assert!(running.len() == 1, "back to the minimum:\n{}", trace.join("\n"));
}

/// On Kubernetes executors outlive a driver Job: the next driver on the same address finds
/// them, because they register again when it answers that it does not know them.
#[test]
fn executors_register_again_with_the_next_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let executor = Executor::start(&["--driver", &listen, "--executor-id", "survivor"]);
    for run in ["first", "second"] {
        let out = tmp.path().join(run);
        let output = driver(&["train", "--listen", &listen, "--min-executors", "1", "--quiet", "--out", out.to_str().unwrap()]);
        assert_ok(&output);
        let report = report(&out);
        assert_eq!(report["runs"][0]["executor_stats"][0]["executor_id"], "survivor", "{run} run");
    }
    drop(executor);
}

#[test]
fn too_few_executors_is_a_clear_error_naming_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let listen = format!("127.0.0.1:{}", free_port());
    let _one = Executor::start(&["--driver", &listen, "--executor-id", "only-one"]);
    let output = driver(&[
        "train",
        "--listen",
        &listen,
        "--min-executors",
        "2",
        "--registration-timeout-seconds",
        "2",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "error: 2 executors needed but 1 registered within 2 s; executors register with `canopy-executor --driver HOST:PORT`, this driver listens on {listen}"
        )),
        "{err}"
    );
    assert!(!out.exists());
}

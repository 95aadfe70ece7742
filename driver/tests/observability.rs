//! Metrics against a real Prometheus and Pushgateway: every dashboard query returns data during
//! a real sweep, values agree with the report, and promtool accepts the shipped files and the
//! live endpoints.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool(args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(required_tool("promtool"))
        .args(args)
        .current_dir(repo().join("dashboards/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
}

/// Every PromQL expression of every panel of every shipped dashboard, with Grafana's variables
/// replaced by what they mean for this test.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("dashboards/grafana")).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "10s").replace("$executor_id", ".*");
                out.push((board["title"].as_str().unwrap().to_string(), panel["title"].as_str().unwrap().to_string(), expr));
            }
        }
    }
    assert!(out.len() > 20, "dashboards have panels");
    out
}

fn query(prometheus: &str, expr: &str) -> Vec<serde_json::Value> {
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={}", url_encode(expr))).unwrap();
    assert_eq!(status, 200, "{expr}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "success", "{expr}: {body}");
    let result = &answer["data"]["result"];
    match answer["data"]["resultType"].as_str() {
        Some("scalar") => vec![result.clone()],
        _ => result.as_array().unwrap().clone(),
    }
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn shipped_prometheus_files_pass_promtool() {
    promtool(&["check", "config", "prometheus.yml"], None);
    promtool(&["check", "rules", "rules/canopy.rules.yml"], None);
    promtool(&["test", "rules", "rules/canopy.rules.test.yml"], None);
}

#[test]
fn dashboards_query_real_prometheus_during_a_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let (prom_port, push_port, driver_port) = (free_port(), free_port(), free_port());
    let exec_ports = [free_port(), free_port()];
    let prometheus = format!("127.0.0.1:{prom_port}");
    let pushgateway = format!("127.0.0.1:{push_port}");

    // The shipped configuration, pointed at this test's ports.
    let shipped = std::fs::read_to_string(repo().join("dashboards/prometheus/prometheus.yml")).unwrap();
    let rules = repo().join("dashboards/prometheus/rules/canopy.rules.yml");
    let config = shipped
        .replace("127.0.0.1:9100", &format!("127.0.0.1:{driver_port}"))
        .replace(
            r#""127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103", "127.0.0.1:9104""#,
            &format!(r#""127.0.0.1:{}", "127.0.0.1:{}""#, exec_ports[0], exec_ports[1]),
        )
        .replace("127.0.0.1:9091", &pushgateway)
        .replace("rules/canopy.rules.yml", rules.to_str().unwrap());
    let config_path = tmp.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();

    let _pushgateway = Service(
        Command::new(required_tool("prometheus-pushgateway"))
            .arg(format!("--web.listen-address={pushgateway}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _prometheus = Service(
        Command::new(required_tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prometheus}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_http_ok(&pushgateway, "/-/ready", 20);
    wait_http_ok(&prometheus, "/-/ready", 20);

    // Executors slowed a little so that the sweep spans several scrapes.
    let executors: Vec<Executor> = exec_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let (listen, id) = (format!("127.0.0.1:{port}"), format!("executor-{}", i + 1));
            Executor::start(&["--metrics-listen", &listen, "--executor-id", &id, "--inject-task-delay-ms", "60"])
        })
        .collect();
    let addrs = format!("{},{}", executors[0].addr, executors[1].addr);
    let out = tmp.path().join("out");
    let driver_metrics = format!("127.0.0.1:{driver_port}");
    let push_url = format!("http://{pushgateway}");
    let mut sweep = driver_command(&[
        "scale",
        "--executors",
        "1,2",
        "--repeat",
        "2",
        "--quiet",
        "--executor-addrs",
        &addrs,
        "--out",
        out.to_str().unwrap(),
        "--metrics-listen",
        &driver_metrics,
        "--linger-seconds",
        "4",
        "--pushgateway",
        &push_url,
    ])
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    // While the driver lingers: its endpoint and the executors' pass `promtool check metrics`.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !out.join("report.json").exists() {
        assert!(std::time::Instant::now() < deadline, "the sweep did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    for endpoint in [driver_metrics.clone(), format!("127.0.0.1:{}", exec_ports[0])] {
        let (status, text) = http_get(&endpoint, "/metrics").unwrap();
        assert_eq!(status, 200);
        promtool(&["check", "metrics"], Some(&text));
    }
    assert_eq!(http_get(&driver_metrics, "/readyz").unwrap().0, 200);
    assert!(sweep.wait().unwrap().success());
    // Two more scrapes of the executors after their last task.
    std::thread::sleep(Duration::from_millis(2500));

    for (board, panel, expr) in dashboard_queries() {
        assert!(!query(&prometheus, &expr).is_empty(), "{board} / {panel}: no data for {expr}");
    }

    // Values that must match the report.
    let report = report(&out);
    let runs = report["runs"].as_array().unwrap();
    let last_two = runs.iter().rfind(|r| r["executors"] == 2).unwrap();
    let accuracy = value(&query(&prometheus, r#"max(canopy_run_accuracy{executors="2"})"#)[0]);
    assert_eq!(accuracy, last_two["accuracy"].as_f64().unwrap());
    for stats in last_two["executor_stats"].as_array().unwrap() {
        let id = stats["executor_id"].as_str().unwrap();
        let tasks = query(&prometheus, &format!(r#"max(canopy_run_executor_tasks{{executors="2", executor_id="{id}"}})"#));
        assert_eq!(value(&tasks[0]), stats["tasks"].as_f64().unwrap(), "{id}");
    }
    // Each executor's own counter: every task of every run it served.
    for (i, executor) in executors.iter().enumerate() {
        let id = format!("executor-{}", i + 1);
        let expected: f64 = runs
            .iter()
            .flat_map(|r| r["executor_stats"].as_array().unwrap())
            .filter(|s| s["addr"] == executor.addr.as_str())
            .map(|s| s["tasks"].as_f64().unwrap())
            .sum();
        let counted = query(&prometheus, &format!(r#"sum(canopy_executor_tasks_total{{outcome="ok", executor_id="{id}"}})"#));
        assert_eq!(value(&counted[0]), expected, "{id}");
    }
    // The pushed copy outlives the driver.
    let pushed = query(&prometheus, r#"canopy_run_accuracy{job="canopy_driver", executors="2"}"#);
    assert_eq!(value(&pushed[0]), last_two["accuracy"].as_f64().unwrap());
    let (_, pushed_text) = http_get(&pushgateway, "/metrics").unwrap();
    assert!(pushed_text.contains("canopy_run_weighted_f1"), "Pushgateway holds the run metrics");

    // The run-comparison picture, drawn from the same series.
    let svg = tmp.path().join("runs.svg");
    let plotted = driver(&["plot-runs", "--prometheus", &format!("http://{prometheus}"), "--out", svg.to_str().unwrap()]);
    assert_ok(&plotted);
    assert!(stdout(&plotted).contains("plotted 2 executor counts"), "{}", stdout(&plotted));
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Time vs executors (Prometheus)") && svg.contains("weighted F1"));
}

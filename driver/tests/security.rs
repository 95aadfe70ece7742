//! Authentication and limits seen from the command line: a whole run over mutual TLS, the
//! refusal to serve a non-loopback address without authentication, and an executor too small
//! for its partitions named instead of retried.
#![allow(clippy::unwrap_used)]

#[path = "../../executor/tests/support/certs.rs"]
mod certs;
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::*;

#[test]
fn a_run_over_mutual_tls_gives_the_in_process_model() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = certs::Ca::new("canopy-test-ca");
    // One certificate for the driver and its executors, named as the pods' Service would be.
    let tls = ca.leaf(tmp.path(), "canopy", &["canopy"], false);
    let reference = tmp.path().join("reference");
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", reference.to_str().unwrap()]));
    let out = tmp.path().join("tls");
    let mut args = vec!["train".to_string(), "--executors".into(), "2".into(), "--quiet".into(), "--out".into()];
    args.push(out.to_str().unwrap().into());
    args.extend(tls.args());
    args.extend(["--tls-server-name".into(), "canopy".into()]);
    let output =
        driver_command(&args.iter().map(String::as_str).collect::<Vec<_>>()).env_remove("CANOPY_AUTH_TOKEN_FILE").output().unwrap();
    assert_ok(&output);
    assert_eq!(report(&out)["runs"][0]["model_sha256"], report(&reference)["runs"][0]["model_sha256"]);
}

#[test]
fn a_non_loopback_listener_needs_authentication_or_insecure() {
    let refusal = |flag: &str| {
        format!(
            "refusing to serve on 0.0.0.0:0 ({flag}) without authentication: give --tls-cert, --tls-key and --tls-ca, or \
             --auth-token-file, or --insecure to accept anyone who can reach the port"
        )
    };
    let output = executor_command().env_remove("CANOPY_AUTH_TOKEN_FILE").args(["--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output).trim(), format!("error: {}", refusal("--listen")));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = driver_command(&["train", "--listen", "0.0.0.0:0", "--quiet", "--out", out.to_str().unwrap()])
        .env_remove("CANOPY_AUTH_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&refusal("--listen")), "{}", stderr(&output));
    assert!(!out.exists(), "nothing written");

    // --insecure serves, with a warning.
    let mut child = executor_command()
        .env_remove("CANOPY_AUTH_TOKEN_FILE")
        .args(["--listen", "0.0.0.0:0", "--insecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("canopy-executor listening on 0.0.0.0:"), "{line}");
    let mut warning = String::new();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    while !warning.contains("--insecure") && err.read_line(&mut warning).unwrap() > 0 {}
    assert!(warning.contains("--insecure: serving without authentication"), "{warning}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_executor_too_small_for_its_partitions_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let small = Executor::start(&["--executor-id", "small", "--max-memory-mb", "1"]);
    let out = tmp.path().join("run");
    let output = driver(&["train", "--executor-addrs", &small.addr, "--quiet", "--out", out.to_str().unwrap()]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("executor small failed a task it cannot retry: Some resource has been exhausted: over the memory budget: partition "),
        "{err}"
    );
    assert!(err.contains("of its 1.0 MiB budget (--max-memory-mb)"), "{err}");
    assert!(!out.exists(), "nothing written");
}

//! Data in an object store: a real S3 API (moto's server on 127.0.0.1, started by each test)
//! read through s3:// and, from the same server, http://. The model is the same file as from the
//! local path, on executors and in-process; errors name the URL.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const BUCKET: &str = "canopy";

/// moto's server: `CANOPY_MOTO_SERVER`, or where scripts/test.sh installs it.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("CANOPY_MOTO_SERVER") {
        return path.into();
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/moto/bin/moto_server");
    assert!(installed.is_file(), "moto_server is missing: run scripts/test.sh (it installs PyPI moto[server] into target/tools/moto)");
    installed
}

/// An S3 API server with one bucket, stopped on drop.
struct S3 {
    _server: Service,
    addr: String,
}

impl S3 {
    fn start() -> S3 {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s3 = S3 { _server: Service(child), addr: format!("127.0.0.1:{port}") };
        wait_http_ok(&s3.addr, "/", 60);
        assert_eq!(s3.put(&format!("/{BUCKET}"), &[]), 200, "bucket created");
        s3
    }

    /// An unsigned HTTP PUT (moto does not check signatures) of a public object, readable over
    /// plain http:// too; the status.
    fn put(&self, path: &str, body: &[u8]) -> u16 {
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nx-amz-acl: public-read\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn upload(&self, key: &str, bytes: &[u8]) {
        assert_eq!(self.put(&format!("/{BUCKET}/{key}"), bytes), 200, "{key} uploaded");
    }

    fn http_url(&self, key: &str) -> String {
        format!("http://{}/{BUCKET}/{key}", self.addr)
    }
}

/// The driver with `args`, configured for the S3 API at `endpoint`.
fn driver_on(endpoint: &str, args: &[&str]) -> Output {
    let mut command = driver_command(args);
    for (key, value) in [
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ] {
        command.env(key, value);
    }
    command.env_remove("AWS_PROFILE").env_remove("AWS_SESSION_TOKEN");
    command.output().unwrap()
}

fn endpoint(s3: &S3) -> String {
    format!("http://{}", s3.addr)
}

#[test]
fn s3_and_http_data_give_the_model_of_the_local_file() {
    let s3 = S3::start();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/flights-2013.parquet");
    s3.upload("flights/2013.parquet", &std::fs::read(&data).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let local = dir("local");
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", &local]));
    let reference = model_bytes(Path::new(&local), "model-in-process-r1.json");

    let url = format!("s3://{BUCKET}/flights/2013.parquet");
    let on_s3 = dir("s3");
    assert_ok(&driver_on(&endpoint(&s3), &["scale", "--executors", "2", "--quiet", "--data", &url, "--out", &on_s3]));
    assert!(model_bytes(Path::new(&on_s3), "model-e2-r1.json") == reference, "the model from s3:// differs");
    let report = report(Path::new(&on_s3));
    assert_eq!(report["data"], url);
    assert_eq!(report["rows"]["read"], 327_346);

    // Executors that read their own row ranges from the bucket, with their own credentials.
    let read = dir("s3-read");
    assert_ok(&driver_on(
        &endpoint(&s3),
        &["scale", "--executors", "2", "--read-by", "executors", "--quiet", "--data", &url, "--out", &read],
    ));
    assert!(model_bytes(Path::new(&read), "model-e2-r1.json") == reference, "the model read by executors from s3:// differs");
    assert_eq!(crate::report(Path::new(&read))["runs"][0]["traffic"]["partition_bytes_sent"], 0);

    let over_http = dir("http");
    let http = s3.http_url("flights/2013.parquet");
    assert_ok(&driver_on(&endpoint(&s3), &["train", "--in-process", "--quiet", "--data", &http, "--out", &over_http]));
    assert!(model_bytes(Path::new(&over_http), "model-in-process-r1.json") == reference, "the model from http:// differs");
}

#[test]
fn compressed_json_in_s3_scores_like_the_local_file() {
    let s3 = S3::start();
    let jsonl = fixture("flights-jan.jsonl.bz2");
    s3.upload("flights-jan.jsonl.bz2", &std::fs::read(&jsonl).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let train = tmp.path().join("train");
    assert_ok(&driver(&["train", "--in-process", "--quiet", "--out", train.to_str().unwrap()]));
    let model = train.join("models/model-in-process-r1.json");
    let (local, remote) = (tmp.path().join("local.csv"), tmp.path().join("remote.csv"));
    assert_ok(&predict(&model, &jsonl, &local));
    let url = format!("s3://{BUCKET}/flights-jan.jsonl.bz2");
    let args = ["predict", "--quiet", "--model", model.to_str().unwrap(), "--data", &url, "--out", remote.to_str().unwrap()];
    let scored = driver_on(&endpoint(&s3), &args);
    assert_ok(&scored);
    assert!(stdout(&scored).contains("scored 3000 rows"), "{}", stdout(&scored));
    assert_eq!(std::fs::read(&remote).unwrap(), std::fs::read(&local).unwrap());
}

#[test]
fn remote_errors_name_the_url_and_write_nothing() {
    let s3 = S3::start();
    s3.upload("notes.parquet", b"these are not columns");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let cases = [
        (endpoint(&s3), format!("s3://{BUCKET}/missing.parquet"), "not found"),
        (endpoint(&s3), format!("s3://{BUCKET}/notes.parquet"), "not a Parquet file"),
        (closed, format!("s3://{BUCKET}/flights.parquet"), "Connection refused"),
        (endpoint(&s3), "ftp://example.com/flights.parquet".to_string(), "URLs are not supported"),
    ];
    for (endpoint, url, expected) in cases {
        let output = driver_on(&endpoint, &["train", "--in-process", "--quiet", "--data", &url, "--out", out.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{url}");
        let text = stderr(&output);
        assert!(text.contains(&format!("cannot read '{url}'")), "{url}: {text}");
        assert!(text.contains(expected), "{url}: expected '{expected}' in: {text}");
        assert!(!out.exists(), "{url}: output written");
    }
}

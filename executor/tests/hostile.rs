//! A hostile or broken client against a real executor process over real sockets: no or wrong
//! credentials, certificates from another CA or expired, absurd sizes, ids out of range, calls
//! out of order, contradictory split logs, malformed or oversized Flight streams. Each gets its
//! exact status, and afterwards the executor still answers and its heap stays small.
#![allow(clippy::unwrap_used)]

#[path = "support/certs.rs"]
mod certs;
#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightData, FlightDescriptor};
use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_proto::v1::{self, HandshakeRequest, HeartbeatRequest};
use canopy_runtime::security::{AuthChannel, Security, Token};
use futures::TryStreamExt;
use process::Executor;
use prost::Message;
use tonic::Code;

const TOKEN: &str = "hostile-suite-token-0123456789";

fn start(args: &[String]) -> Executor {
    process::start("target", args)
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

/// An executor that requires the suite's token, with a 256 MiB memory budget.
fn start_with_token(dir: &Path) -> Executor {
    start(&["--auth-token-file".into(), token_file(dir).to_str().unwrap().into(), "--max-memory-mb".into(), "256".into()])
}

async fn channel(security: &Security, addr: &str) -> Result<AuthChannel, String> {
    let channel = security.endpoint(addr)?.connect_timeout(Duration::from_secs(5)).connect().await.map_err(|e| format!("{e:?}"))?;
    Ok(security.authorize(channel))
}

fn with_token(token: &str) -> Security {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    std::fs::write(&path, token).unwrap();
    Security { token: Some(Token::from_file(&path).unwrap()), ..Security::default() }
}

async fn control(addr: &str) -> ExecutorClient<AuthChannel> {
    ExecutorClient::new(channel(&with_token(TOKEN), addr).await.unwrap()).max_encoding_message_size(usize::MAX)
}

async fn handshake(client: &mut ExecutorClient<AuthChannel>) -> Result<String, tonic::Status> {
    let reply = client.handshake(HandshakeRequest { protocol_version: canopy_proto::PROTOCOL_VERSION }).await?;
    Ok(reply.into_inner().executor_id)
}

fn status(r: Result<impl std::fmt::Debug, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_string())
}

fn x_job(job_id: &str) -> v1::BeginJobRequest {
    v1::BeginJobRequest {
        job_id: job_id.into(),
        features: vec![v1::FeatureBins { name: "x".into(), thresholds: vec![0.5, 1.5] }],
        num_classes: 2,
        mode: v1::JobMode::Exact as i32,
        forest: None,
        source: None,
    }
}

fn train(index: u32) -> v1::PartitionRef {
    v1::PartitionRef { role: v1::PartitionRole::Train as i32, index }
}

fn split(node: u32, feature: u32, left: u32, right: u32) -> v1::SplitDecision {
    v1::SplitDecision { node, feature, threshold_bin: 0, left, right }
}

fn descriptor(job_id: &str, index: u32, rows: u64) -> FlightDescriptor {
    FlightDescriptor::new_cmd(v1::PartitionDescriptor { job_id: job_id.into(), partition: Some(train(index)), rows }.encode_to_vec())
}

/// `rows` rows of the x_job partition format (or another column name).
fn batch(column: &str, rows: usize) -> RecordBatch {
    let schema = Schema::new(vec![Field::new(column, DataType::UInt8, false), Field::new("label", DataType::UInt8, false)]);
    let bins = UInt8Array::from_iter_values((0..rows).map(|i| (i % 3) as u8));
    let labels = UInt8Array::from_iter_values((0..rows).map(|i| (i % 2) as u8));
    RecordBatch::try_new(Arc::new(schema), vec![Arc::new(bins), Arc::new(labels)]).unwrap()
}

async fn put(flight: &mut FlightClient<AuthChannel>, descriptor: FlightDescriptor, batch: RecordBatch) -> Result<(), tonic::Status> {
    let stream = FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(canopy_proto::FLIGHT_CHUNK_BYTES)
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]));
    put_raw(flight, stream).await
}

async fn put_raw(
    flight: &mut FlightClient<AuthChannel>,
    stream: impl futures::Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
) -> Result<(), tonic::Status> {
    let as_status = |e: FlightError| match e {
        FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    };
    let _: Vec<_> = flight.do_put(stream).await.map_err(as_status)?.try_collect().await.map_err(as_status)?;
    Ok(())
}

#[tokio::test]
async fn calls_without_the_right_token_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let executor = start_with_token(dir.path());
    let plain = Security::default();
    let mut anonymous = ExecutorClient::new(channel(&plain, &executor.addr).await.unwrap());
    let refused = (Code::Unauthenticated, "this server requires a bearer token (--auth-token-file)".to_string());
    assert_eq!(status(handshake(&mut anonymous).await), refused);
    assert_eq!(status(anonymous.begin_job(x_job("j")).await), refused);
    let mut anonymous_flight = FlightClient::new(channel(&plain, &executor.addr).await.unwrap());
    assert_eq!(status(put(&mut anonymous_flight, descriptor("j", 0, 3), batch("x", 3)).await), refused);

    let mut wrong = ExecutorClient::new(channel(&with_token("hostile-suite-token-0123456788"), &executor.addr).await.unwrap());
    assert_eq!(status(wrong.begin_job(x_job("j")).await), (Code::Unauthenticated, "wrong bearer token".to_string()));

    let mut client = control(&executor.addr).await;
    assert_eq!(handshake(&mut client).await.unwrap(), "target");
    // Nothing the refused calls sent started a job.
    client.begin_job(x_job("j")).await.unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_strangers_and_follows_rotated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (certs::Ca::new("canopy-ca"), certs::Ca::new("stranger-ca"));
    let server = ca.leaf(dir.path(), "executor", &["canopy", "127.0.0.1"], false);
    let executor = start(&server.args());
    let ping = |security: Security| {
        let addr = executor.addr.clone();
        async move {
            let mut client = ExecutorClient::new(channel(&security, &addr).await?);
            handshake(&mut client).await.map_err(|s| format!("{}: {}", s.code(), s.message()))
        }
    };
    assert_eq!(ping(ca.leaf(dir.path(), "driver", &["driver"], false).security(None)).await.unwrap(), "target");
    // The name in the executor's certificate instead of the address dialled.
    assert_eq!(ping(ca.leaf(dir.path(), "driver", &["driver"], false).security(Some("canopy"))).await.unwrap(), "target");
    assert!(ping(ca.leaf(dir.path(), "driver", &["driver"], false).security(Some("elsewhere"))).await.is_err(), "wrong name");
    assert!(ping(other_ca.leaf(dir.path(), "stranger", &["stranger"], false).security(None)).await.is_err(), "another CA");
    assert!(ping(ca.leaf(dir.path(), "expired", &["expired"], true).security(None)).await.is_err(), "expired certificate");
    assert!(ping(Security::default()).await.is_err(), "no TLS at all");
    let mut no_client_cert = ca.leaf(dir.path(), "anon", &["anon"], false).security(None);
    if let Some(tls) = &mut no_client_cert.tls {
        // A client that trusts the server but presents a certificate of another CA.
        let stranger = other_ca.leaf(dir.path(), "anon-id", &["anon"], false);
        (tls.cert, tls.key) = (stranger.cert, stranger.key);
    }
    assert!(ping(no_client_cert).await.is_err(), "client certificate of another CA");

    // cert-manager rotates to a new CA: the executor picks the new files up for new connections.
    std::thread::sleep(Duration::from_millis(20));
    let rotated = other_ca.leaf(dir.path(), "rotated", &["canopy", "127.0.0.1"], false);
    for (from, to) in [(&rotated.cert, &server.cert), (&rotated.key, &server.key), (&rotated.ca, &server.ca)] {
        std::fs::copy(from, to).unwrap();
    }
    assert_eq!(ping(other_ca.leaf(dir.path(), "driver2", &["driver"], false).security(None)).await.unwrap(), "target");
    assert!(ping(ca.leaf(dir.path(), "driver", &["driver"], false).security(None)).await.is_err(), "the old CA is gone");
}

#[tokio::test]
async fn hostile_requests_get_exact_errors_and_the_executor_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let executor = start_with_token(dir.path());
    let mut c = control(&executor.addr).await;
    let mut flight = FlightClient::new(channel(&with_token(TOKEN), &executor.addr).await.unwrap());

    // Out of order: no job yet.
    let no_job = (Code::FailedPrecondition, "no job is running on this executor (call BeginJob first)".to_string());
    let ask = |nodes: Vec<u32>, partitions: Vec<v1::PartitionRef>| v1::BuildHistogramsRequest { job_id: "j".into(), nodes, partitions };
    assert_eq!(status(c.build_histograms(ask(vec![0], vec![])).await), no_job);
    assert_eq!(status(put(&mut flight, descriptor("j", 0, 3), batch("x", 3)).await), no_job);

    // A 100 MB message is refused by its length, before it is read.
    let huge = v1::BeginJobRequest { job_id: "x".repeat(100 << 20), ..x_job("j") };
    let (code, message) = status(c.begin_job(huge).await);
    assert_eq!(code, Code::OutOfRange, "{message}");
    assert!(message.contains("the limit is: 4194304 bytes"), "{message}");
    // 2 M empty features fit in 4 MiB: refused by count, and the decoding cost stays bounded.
    let empty = v1::BeginJobRequest { features: vec![v1::FeatureBins::default(); 2_000_000], ..x_job("j") };
    assert_eq!(
        status(c.begin_job(empty).await),
        (Code::InvalidArgument, "invalid request: a job needs 1 to 1024 features, got 2000000".to_string())
    );

    let beat = c.heartbeat(HeartbeatRequest {}).await.unwrap().into_inner();
    eprintln!("after the big messages: live {} peak {}", beat.heap_bytes, beat.peak_heap_bytes);
    assert!(beat.peak_heap_bytes < 128 << 20, "peak heap {} bytes", beat.peak_heap_bytes);

    c.begin_job(x_job("j")).await.unwrap();
    assert_eq!(
        status(c.begin_job(x_job("k")).await),
        (Code::FailedPrecondition, "this executor runs another job; it takes one job at a time (EndJob first)".to_string())
    );
    // Another job's id: refused without naming the running job.
    let other = v1::BuildHistogramsRequest { job_id: "guess".into(), nodes: vec![0], partitions: vec![] };
    assert_eq!(
        status(c.build_histograms(other).await),
        (Code::FailedPrecondition, "request is for job 'guess', which is not the job this executor runs".to_string())
    );

    // Flight: a stream of another schema, bytes that are not Arrow IPC, more rows than declared,
    // more than the memory budget.
    assert_eq!(
        status(put(&mut flight, descriptor("j", 0, 3), batch("y", 3)).await),
        (Code::InvalidArgument, "partition data: partition train/0: column 'x' is missing".to_string())
    );
    let garbage = FlightData {
        flight_descriptor: Some(descriptor("j", 0, 3)),
        data_header: vec![0xff; 64].into(),
        data_body: vec![0x5a; 4096].into(),
        ..FlightData::default()
    };
    let (code, message) = status(put_raw(&mut flight, futures::stream::iter([Ok(garbage)])).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.starts_with("partition train/0 is not valid Arrow data: "), "{message}");
    let (code, message) = status(put(&mut flight, descriptor("j", 0, 3), batch("x", 2_000_000)).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("bytes for 3 declared rows"), "{message}");
    let (code, message) = status(put(&mut flight, descriptor("j", 0, 1 << 40), batch("x", 3)).await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(
        message.starts_with("over the memory budget: partition train/0 (1099511627776 rows) needs 8388608.0 MiB; this executor uses "),
        "{message}"
    );
    assert!(message.ends_with("of its 256.0 MiB budget (--max-memory-mb)"), "{message}");
    let out_of_range =
        FlightDescriptor::new_cmd(v1::PartitionDescriptor { job_id: "j".into(), partition: Some(train(1 << 31)), rows: 3 }.encode_to_vec());
    assert_eq!(
        status(put(&mut flight, out_of_range, batch("x", 3)).await),
        (
            Code::InvalidArgument,
            "field partition.index = 2147483648 does not fit in a partition index (below MAX_PARTITIONS, 4096)".to_string()
        )
    );
    // The partition that is right, once; a second copy is refused.
    put(&mut flight, descriptor("j", 0, 6), batch("x", 6)).await.unwrap();
    assert_eq!(
        status(put(&mut flight, descriptor("j", 0, 6), batch("x", 6)).await),
        (Code::FailedPrecondition, "partition train/0 is held already".to_string())
    );

    // Histograms: only of leaves, each node once, of held partitions.
    assert_eq!(
        status(c.build_histograms(ask(vec![5], vec![train(0)])).await),
        (Code::InvalidArgument, "node 5 is not a leaf of the tree being grown".to_string())
    );
    assert_eq!(
        status(c.build_histograms(ask(vec![0, 0], vec![train(0)])).await),
        (Code::InvalidArgument, "invalid request: a node is named twice".to_string())
    );
    assert_eq!(
        status(c.build_histograms(ask(vec![0], vec![train(1)])).await),
        (Code::FailedPrecondition, "partition train/1 is not held here".to_string())
    );
    let root = c.build_histograms(ask(vec![0], vec![train(0)])).await.unwrap().into_inner();
    assert_eq!(root.histograms[0].counts, vec![1, 1, 1, 1, 1, 1]);

    // The split log: an invalid decision is refused and logs nothing, so the right retry works;
    // a contradicting overlap is refused.
    let apply = |first_index, decisions| v1::ApplySplitsRequest { job_id: "j".into(), first_index, decisions, partitions: vec![train(0)] };
    assert_eq!(
        status(c.apply_splits(apply(0, vec![split(0, 9, 1, 2)])).await),
        (Code::InvalidArgument, "invalid split decision #0: feature 9 of 1".to_string())
    );
    assert_eq!(
        status(c.apply_splits(apply(0, vec![split(0, 0, 1, 0)])).await),
        (Code::InvalidArgument, "invalid split decision #0: node 0 splits into 1 and 0: the three must differ".to_string())
    );
    c.apply_splits(apply(0, vec![split(0, 0, 1, 2)])).await.unwrap();
    c.apply_splits(apply(0, vec![split(0, 0, 1, 2)])).await.unwrap();
    let (code, message) = status(c.apply_splits(apply(0, vec![split(0, 0, 2, 1)])).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("split log conflict at decision #0: "), "{message}");
    assert_eq!(
        status(c.apply_splits(apply(1, vec![split(1, 0, 2, 3)])).await),
        (Code::InvalidArgument, "invalid split decision #1: child id 2 is already used".to_string())
    );
    let left = c.build_histograms(ask(vec![1], vec![train(0)])).await.unwrap().into_inner();
    assert_eq!(left.histograms[0].counts, vec![1, 1, 0, 0, 0, 0], "bin 0 rows went left");

    // Still serving, and its heap stayed small through all of it.
    assert_eq!(handshake(&mut c).await.unwrap(), "target");
    let beat = c.heartbeat(HeartbeatRequest {}).await.unwrap().into_inner();
    eprintln!("at the end: live {} peak {}", beat.heap_bytes, beat.peak_heap_bytes);
    assert!(beat.heap_bytes < 16 << 20, "live heap {} bytes", beat.heap_bytes);
    assert!(beat.peak_heap_bytes < 128 << 20, "peak heap {} bytes", beat.peak_heap_bytes);
    c.end_job(v1::EndJobRequest { job_id: "j".into() }).await.unwrap();
    c.end_job(v1::EndJobRequest { job_id: "j".into() }).await.unwrap();
}

/// A job whose executors read their own rows names a file: its source is checked, and opened,
/// before the job starts; LoadPartitions is checked before anything is read.
#[tokio::test]
async fn data_sources_and_partition_loads_are_checked_before_anything_is_read() {
    use canopy_pipeline::features::Encoding;
    use canopy_pipeline::partitions::FeatureEncoding;
    use canopy_pipeline::spec::{FeatureSpec, LabelSpec};

    let dir = tempfile::tempdir().unwrap();
    let executor = start_with_token(dir.path());
    let mut client = control(&executor.addr).await;
    let load =
        |job: &str, partitions: Vec<v1::PartitionRef>, rows: Vec<u64>| v1::LoadPartitionsRequest { job_id: job.into(), partitions, rows };
    let invalid = |message: &str| (Code::InvalidArgument, format!("invalid request: {message}"));

    // Partitions of a job that does not read are sent, never read.
    client.begin_job(x_job("sent")).await.unwrap();
    assert_eq!(
        status(client.load_partitions(load("sent", vec![train(0)], vec![3])).await),
        invalid("this job's partitions are sent, not read")
    );
    assert_eq!(
        status(client.load_partitions(load("sent", vec![train(0), train(0)], vec![3, 3])).await),
        invalid("a partition is named twice")
    );
    assert_eq!(status(client.load_partitions(load("sent", vec![train(0)], vec![])).await), invalid("1 partitions but 0 row counts"));
    client.end_job(v1::EndJobRequest { job_id: "sent".into() }).await.unwrap();

    // A file the executor cannot read: the job does not start, and the next one can.
    let label = LabelSpec { column: "y".into(), buckets: vec![0.5] };
    let features = FeatureSpec { label: label.clone(), numeric: vec!["x".into()], categorical: vec![], derived: vec![] };
    let encoding = Encoding { label, class_names: vec!["[-inf,0.5)".into(), "[0.5,inf)".into()], string_indexes: Default::default() };
    let missing = dir.path().join("missing.parquet");
    let source = v1::DataSource {
        location: missing.to_str().unwrap().into(),
        version: "10 bytes".into(),
        rows: 10,
        partitions: 2,
        split_seed: 1,
        test_fraction: 0.2,
        features_json: serde_json::to_vec(&FeatureEncoding { features, encoding: Some(encoding) }).unwrap(),
    };
    let unreadable = (Code::InvalidArgument, format!("cannot read '{}': No such file or directory (os error 2)", missing.display()));
    let reading = v1::BeginJobRequest { source: Some(source.clone()), ..x_job("read") };
    assert_eq!(status(client.begin_job(reading).await), unreadable);
    // Counting needs no job, and is checked the same way.
    let count = |partitions: Vec<u32>| v1::CountPartitionsRequest { source: Some(source.clone()), partitions };
    assert_eq!(
        status(client.count_partitions(count(vec![1, 0])).await),
        invalid("partitions to count must be ascending, distinct and below 2")
    );
    assert_eq!(
        status(client.count_partitions(count(vec![2])).await),
        invalid("partitions to count must be ascending, distinct and below 2")
    );
    assert_eq!(status(client.count_partitions(count(vec![0, 1])).await), unreadable);
    client.begin_job(x_job("after")).await.unwrap();
}

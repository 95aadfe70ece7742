//! The executor binary over a real socket: the handshake refuses other protocol versions, and
//! bad requests get precise errors instead of panics.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_proto::v1::{self, BeginJobRequest, BuildHistogramsRequest, HandshakeRequest};
use futures::TryStreamExt;
use prost::Message;
#[path = "support/process.rs"]
mod process;
use process::Executor;

fn start() -> Executor {
    process::start("test-executor", &[])
}

async fn client(addr: &str) -> ExecutorClient<tonic::transport::Channel> {
    ExecutorClient::connect(format!("http://{addr}")).await.unwrap()
}

#[tokio::test]
async fn handshake_accepts_our_version_and_refuses_others() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    let ok = c.handshake(HandshakeRequest { protocol_version: canopy_proto::PROTOCOL_VERSION }).await.unwrap().into_inner();
    assert_eq!((ok.protocol_version, ok.executor_id.as_str()), (canopy_proto::PROTOCOL_VERSION, "test-executor"));
    let refused = c.handshake(HandshakeRequest { protocol_version: 7 }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "protocol version mismatch: this executor speaks canopy.v1 protocol {}, the driver speaks 7",
            canopy_proto::PROTOCOL_VERSION
        )
    );
}

fn begin(job_id: &str, features: Vec<v1::FeatureBins>) -> BeginJobRequest {
    BeginJobRequest { job_id: job_id.into(), features, num_classes: 2, mode: v1::JobMode::Exact as i32, forest: None, source: None }
}

fn x_bins() -> Vec<v1::FeatureBins> {
    vec![v1::FeatureBins { name: "x".into(), thresholds: vec![0.5] }]
}

fn train(index: u32) -> v1::PartitionRef {
    v1::PartitionRef { role: v1::PartitionRole::Train as i32, index }
}

fn histograms(job_id: &str, partitions: Vec<v1::PartitionRef>) -> BuildHistogramsRequest {
    BuildHistogramsRequest { job_id: job_id.into(), nodes: vec![0], partitions }
}

#[tokio::test]
async fn tasks_without_a_job_or_for_another_job_are_refused() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    let err = c.build_histograms(histograms("j", vec![])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::FailedPrecondition, "no job is running on this executor (call BeginJob first)"));
    c.begin_job(begin("a", x_bins())).await.unwrap();
    let err = c.build_histograms(histograms("b", vec![])).await.unwrap_err();
    assert_eq!(err.message(), "request is for job 'b', which is not the job this executor runs", "the running job's id is not given away");
    // One job at a time: a second BeginJob does not replace the running one.
    let err = c.begin_job(begin("c", x_bins())).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::FailedPrecondition, "this executor runs another job; it takes one job at a time (EndJob first)")
    );
    let too_many = vec![v1::FeatureBins { name: "x".into(), thresholds: (0..300).map(f64::from).collect() }];
    let err = c.begin_job(begin("c", too_many)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "invalid request: feature 'x' needs at most 255 finite, increasing thresholds, got 300")
    );
    let nan = vec![v1::FeatureBins { name: "x".into(), thresholds: vec![f64::NAN] }];
    assert_eq!(c.begin_job(begin("c", nan)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let err = c.begin_job(begin("c", vec![])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "invalid request: a job needs 1 to 1024 features, got 0"));
    let err = c.begin_job(begin("", x_bins())).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "invalid request: job_id must be 1 to 256 bytes, got 0"));
    // EndJob twice is harmless: the same answer.
    let first = c.end_job(v1::EndJobRequest { job_id: "a".into() }).await.unwrap().into_inner();
    let second = c.end_job(v1::EndJobRequest { job_id: "a".into() }).await.unwrap().into_inner();
    assert_eq!(first, second);
    c.begin_job(begin("c", x_bins())).await.unwrap();
}

#[tokio::test]
async fn partitions_arrive_over_flight_are_named_by_tasks_and_move_away() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    c.begin_job(begin("a", x_bins())).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", executor.addr)).unwrap().connect().await.unwrap();
    let put = |batch: RecordBatch, index: u32, rows: u64| {
        let mut flight = FlightClient::new(channel.clone());
        let descriptor = v1::PartitionDescriptor { job_id: "a".into(), partition: Some(train(index)), rows };
        async move {
            let stream = FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(FlightDescriptor::new_cmd(descriptor.encode_to_vec())))
                .build(futures::stream::iter([Ok(batch)]));
            flight.do_put(stream).await?.try_collect::<Vec<_>>().await
        }
    };
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false), Field::new("label", DataType::UInt8, false)]));
    let good =
        RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![0.0, 1.0, 1.0])), Arc::new(UInt8Array::from(vec![0, 1, 1]))])
            .unwrap();
    put(good.clone(), 3, 3).await.unwrap();
    let hist = c.build_histograms(histograms("a", vec![train(3)])).await.unwrap().into_inner();
    // [bin][class]: bin 0 holds one row of class 0, bin 1 two rows of class 1.
    assert_eq!(hist.histograms[0].counts, vec![1, 0, 0, 2]);
    // A partition it does not hold is refused by name, so a moved partition is never counted twice.
    let err = c.build_histograms(histograms("a", vec![train(3), train(4)])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::FailedPrecondition, "partition train/4 is not held here"));
    let err = put(good.clone(), 3, 3).await.unwrap_err().to_string();
    assert!(err.contains("partition train/3 is held already"), "{err}");
    let err = put(good.clone(), 5, 7).await.unwrap_err().to_string();
    assert!(err.contains("partition train/5 holds 3 rows, its descriptor declared 7"), "{err}");
    let released = c.release_partition(v1::ReleasePartitionRequest { job_id: "a".into(), partition: Some(train(3)) }).await.unwrap();
    assert_eq!(released.into_inner().rows, 3);
    assert_eq!(c.build_histograms(histograms("a", vec![train(3)])).await.unwrap_err().code(), tonic::Code::FailedPrecondition);

    let wrong = Arc::new(Schema::new(vec![Field::new("y", DataType::Float64, false), Field::new("label", DataType::UInt8, false)]));
    let bad = RecordBatch::try_new(wrong, vec![Arc::new(Float64Array::from(vec![0.0])), Arc::new(UInt8Array::from(vec![0]))]).unwrap();
    let err = put(bad, 6, 1).await.unwrap_err().to_string();
    assert!(err.contains("partition data: partition train/6: column 'x' is missing"), "{err}");
}

#[tokio::test]
async fn a_refused_split_log_entry_is_not_logged() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    c.begin_job(begin("a", x_bins())).await.unwrap();
    let split = |feature| v1::SplitDecision { node: 0, feature, threshold_bin: 0, left: 1, right: 2 };
    let request = |decisions| v1::ApplySplitsRequest { job_id: "a".into(), first_index: 0, decisions, partitions: vec![] };
    let err = c.apply_splits(request(vec![split(5)])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "invalid split decision #0: feature 5 of 1"));
    // The right decision is then logged, not skipped as a retry.
    c.apply_splits(request(vec![split(0)])).await.unwrap();
    let contradiction = v1::SplitDecision { left: 2, right: 1, ..split(0) };
    let err = c.apply_splits(request(vec![contradiction])).await.unwrap_err();
    assert!(err.message().starts_with("split log conflict at decision #0"), "{}", err.message());
}

#[tokio::test]
async fn ensemble_requests_are_checked_before_linfa_sees_them() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    let job = BeginJobRequest { mode: v1::JobMode::Ensemble as i32, ..begin("e", x_bins()) };
    c.begin_job(job).await.unwrap();
    let request = |min_instances_per_node, impurity| v1::TrainLocalTreeRequest {
        job_id: "e".into(),
        max_depth: 3,
        min_instances_per_node,
        min_info_gain: 0.0,
        impurity,
        partitions: vec![],
    };
    // proto3's default 0 used to panic inside linfa while the job lock was held.
    let err = c.train_local_tree(request(0, v1::Impurity::Gini as i32)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "invalid request: min_instances_per_node must be at least 1"));
    let err = c.train_local_tree(request(1, 0)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "field impurity is missing or unspecified"));
    // The executor still serves the job.
    let err = c.train_local_tree(request(1, v1::Impurity::Entropy as i32)).await.unwrap_err();
    assert_eq!(err.message(), "invalid request: the named partitions hold no training rows");
}

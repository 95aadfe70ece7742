//! The executor binary over a real socket: the handshake refuses other protocol versions, and
//! bad requests get precise errors instead of panics.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_proto::v1::{self, BeginJobRequest, BuildHistogramsRequest, HandshakeRequest};
use futures::TryStreamExt;
use prost::Message;

struct Executor {
    child: Child,
    addr: String,
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Executor {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canopy-executor"))
        .args(["--listen", "127.0.0.1:0", "--quiet", "--executor-id", "test-executor"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("canopy-executor listening on ").unwrap().to_string();
    Executor { child, addr }
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

#[tokio::test]
async fn tasks_without_a_job_or_for_another_job_are_refused() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    let err = c.build_histograms(BuildHistogramsRequest { job_id: "j".into(), nodes: vec![0] }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::FailedPrecondition, "no job is running on this executor (call BeginJob first)"));
    let features = vec![v1::FeatureBins { name: "x".into(), thresholds: vec![0.5] }];
    c.begin_job(BeginJobRequest { job_id: "a".into(), features, num_classes: 2, mode: v1::JobMode::Exact as i32 }).await.unwrap();
    let err = c.build_histograms(BuildHistogramsRequest { job_id: "b".into(), nodes: vec![0] }).await.unwrap_err();
    assert_eq!(err.message(), "request is for job 'b' but this executor runs job 'a'");
    let too_many = vec![v1::FeatureBins { name: "x".into(), thresholds: (0..300).map(f64::from).collect() }];
    let err = c
        .begin_job(BeginJobRequest { job_id: "c".into(), features: too_many, num_classes: 2, mode: v1::JobMode::Exact as i32 })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "invalid request: feature 'x' needs at most 255 increasing thresholds, got 300")
    );
}

#[tokio::test]
async fn partitions_arrive_over_flight_and_bad_ones_are_named() {
    let executor = start();
    let mut c = client(&executor.addr).await;
    let features = vec![v1::FeatureBins { name: "x".into(), thresholds: vec![0.5] }];
    c.begin_job(BeginJobRequest { job_id: "a".into(), features, num_classes: 2, mode: v1::JobMode::Exact as i32 }).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", executor.addr)).unwrap().connect().await.unwrap();
    let put = |batch: RecordBatch| {
        let mut flight = FlightClient::new(channel.clone());
        let descriptor = v1::PartitionDescriptor { job_id: "a".into(), partition_id: 3, role: v1::PartitionRole::Train as i32 };
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
    put(good).await.unwrap();
    let hist = c.build_histograms(BuildHistogramsRequest { job_id: "a".into(), nodes: vec![0] }).await.unwrap().into_inner();
    // [bin][class]: bin 0 holds one row of class 0, bin 1 two rows of class 1.
    assert_eq!(hist.histograms[0].counts, vec![1, 0, 0, 2]);

    let wrong = Arc::new(Schema::new(vec![Field::new("y", DataType::Float64, false), Field::new("label", DataType::UInt8, false)]));
    let bad = RecordBatch::try_new(wrong, vec![Arc::new(Float64Array::from(vec![0.0])), Arc::new(UInt8Array::from(vec![0]))]).unwrap();
    let err = put(bad).await.unwrap_err().to_string();
    assert!(err.contains("partition data: column 'x' is missing"), "{err}");
}

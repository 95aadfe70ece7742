//! gRPC handlers: they check the job, convert wire types, run the task off the async threads,
//! and count what they did. The work itself is in `tasks`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest as FlightHandshakeRequest,
    HandshakeResponse as FlightHandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use canopy_proto::v1::{self, executor_server::Executor};
use canopy_proto::{PROTOCOL_VERSION, edges_from_wire, tree_from_wire};
use canopy_tree::{ConfusionMatrix, NodeId, SplitDecision};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, instrument};

use crate::ExecutorError;
use crate::metrics::ExecutorMetrics;
use crate::partition::decode_partition;
use crate::store::{Job, Mode};
use crate::tasks::{self, LocalTreeParams};

/// Settings that change how the executor behaves, for tests of failures.
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    /// Sleep this long before every histogram task (a slow or hung executor).
    pub task_delay: Duration,
    /// Answer handshakes with this protocol version instead of ours.
    pub protocol_version: Option<u32>,
}

#[derive(Clone)]
pub struct ExecutorService {
    inner: Arc<Inner>,
}

struct Inner {
    executor_id: String,
    job: Mutex<Option<Job>>,
    faults: FaultInjection,
    metrics: ExecutorMetrics,
    metrics_addr: String,
}

impl ExecutorService {
    pub fn new(executor_id: String, faults: FaultInjection, metrics: ExecutorMetrics, metrics_addr: String) -> Self {
        ExecutorService { inner: Arc::new(Inner { executor_id, job: Mutex::new(None), faults, metrics, metrics_addr }) }
    }

    /// Runs `work` on the job of `job_id` on a blocking thread, timing it as `phase` of a task
    /// of kind `task_kind`, for the report and the metrics.
    async fn with_job<T: Send + 'static>(
        &self,
        job_id: String,
        task_kind: &'static str,
        phase: &'static str,
        work: impl FnOnce(&mut Job) -> Result<T, ExecutorError> + Send + 'static,
    ) -> Result<T, Status> {
        let inner = self.inner.clone();
        let metrics = &self.inner.metrics;
        metrics.running.inc();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = inner.job.lock().map_err(|_| ExecutorError::TaskAborted("job state poisoned".into()))?;
            let job = guard.as_mut().ok_or(ExecutorError::NoJob)?;
            job.check_id(&job_id)?;
            let started = Instant::now();
            let out = work(job)?;
            let took = started.elapsed();
            job.stats.record(phase, took);
            debug!(task_kind, phase, took_ms = took.as_millis() as u64, "task done");
            Ok((out, took))
        })
        .await
        .map_err(|e| ExecutorError::TaskAborted(e.to_string()))
        .and_then(|r| r);
        metrics.running.dec();
        metrics.task_done(task_kind, result.is_ok());
        let (out, took) = result.map_err(Status::from)?;
        metrics.observe(task_kind, phase, took.as_secs_f64());
        Ok(out)
    }

    /// [`Self::with_job`] for tasks that answer with a message: its encoded size counts as bytes
    /// sent, in the job's stats and the metrics, while the job is at hand.
    async fn answer<M: Message + Send + 'static>(
        &self,
        job_id: String,
        task_kind: &'static str,
        phase: &'static str,
        work: impl FnOnce(&mut Job) -> Result<M, ExecutorError> + Send + 'static,
    ) -> Result<Response<M>, Status> {
        let sent_bytes = self.inner.metrics.sent_bytes.clone();
        let response = self
            .with_job(job_id, task_kind, phase, move |job| {
                let response = work(job)?;
                let bytes = response.encoded_len() as u64;
                job.stats.bytes_sent += bytes;
                sent_bytes.inc_by(bytes);
                Ok(response)
            })
            .await?;
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl Executor for ExecutorService {
    #[instrument(skip_all, fields(executor = %self.inner.executor_id))]
    async fn handshake(&self, request: Request<v1::HandshakeRequest>) -> Result<Response<v1::HandshakeResponse>, Status> {
        let ours = self.inner.faults.protocol_version.unwrap_or(PROTOCOL_VERSION);
        let theirs = request.get_ref().protocol_version;
        if theirs != ours {
            return Err(ExecutorError::ProtocolMismatch { executor: ours, driver: theirs }.into());
        }
        Ok(Response::new(v1::HandshakeResponse {
            protocol_version: ours,
            executor_id: self.inner.executor_id.clone(),
            pid: std::process::id(),
            metrics_addr: self.inner.metrics_addr.clone(),
        }))
    }

    #[instrument(skip_all, fields(executor = %self.inner.executor_id, job = %request.get_ref().job_id))]
    async fn begin_job(&self, request: Request<v1::BeginJobRequest>) -> Result<Response<v1::BeginJobResponse>, Status> {
        let r = request.into_inner();
        let mode = match v1::JobMode::try_from(r.mode) {
            Ok(v1::JobMode::Exact) => Mode::Exact,
            Ok(v1::JobMode::Ensemble) => Mode::Ensemble,
            _ => return Err(ExecutorError::InvalidRequest(format!("unknown job mode {}", r.mode)).into()),
        };
        let num_classes = usize::try_from(r.num_classes).unwrap_or(usize::MAX);
        if !(2..=255).contains(&num_classes) {
            return Err(ExecutorError::InvalidRequest(format!("num_classes must be 2..=255, got {}", r.num_classes)).into());
        }
        // Bins are bytes: at most 255 thresholds (256 bins) per feature, in increasing order.
        if let Some(f) =
            r.features.iter().find(|f| f.thresholds.len() > 255 || f.thresholds.windows(2).any(|w| w[0].total_cmp(&w[1]).is_ge()))
        {
            return Err(ExecutorError::InvalidRequest(format!(
                "feature '{}' needs at most 255 increasing thresholds, got {}",
                f.name,
                f.thresholds.len()
            ))
            .into());
        }
        let job = Job::new(r.job_id.clone(), edges_from_wire(&r.features), num_classes, mode);
        let mut guard = self.inner.job.lock().map_err(|_| Status::internal("job state poisoned"))?;
        *guard = Some(job);
        canopy_runtime::heap::reset_peak();
        self.inner.metrics.jobs.inc();
        self.inner.metrics.rows_held.set(0);
        info!(features = r.features.len(), num_classes, "job started");
        Ok(Response::new(v1::BeginJobResponse {}))
    }

    async fn apply_splits(&self, request: Request<v1::ApplySplitsRequest>) -> Result<Response<v1::ApplySplitsResponse>, Status> {
        let r = request.into_inner();
        let decisions = r.decisions.iter().map(SplitDecision::try_from).collect::<Result<Vec<_>, _>>().map_err(ExecutorError::from)?;
        let first = usize::try_from(r.first_index).map_err(|_| ExecutorError::InvalidRequest("first_index too large".into()))?;
        self.with_job(r.job_id, "apply_splits", "split", move |job| job.apply_splits(first, &decisions)).await?;
        Ok(Response::new(v1::ApplySplitsResponse {}))
    }

    async fn build_histograms(
        &self,
        request: Request<v1::BuildHistogramsRequest>,
    ) -> Result<Response<v1::BuildHistogramsResponse>, Status> {
        let r = request.into_inner();
        if !self.inner.faults.task_delay.is_zero() {
            tokio::time::sleep(self.inner.faults.task_delay).await;
        }
        self.answer(r.job_id, "histograms", "histogram", move |job| {
            let nodes: Vec<NodeId> = r.nodes.iter().copied().map(NodeId).collect();
            let histograms = tasks::build_histograms(job, &nodes);
            Ok(v1::BuildHistogramsResponse {
                histograms: r.nodes.iter().zip(histograms).map(|(&node, h)| v1::NodeHistogram { node, counts: h.counts }).collect(),
            })
        })
        .await
    }

    async fn evaluate(&self, request: Request<v1::EvaluateRequest>) -> Result<Response<v1::EvaluateResponse>, Status> {
        let r = request.into_inner();
        self.answer(r.job_id, "evaluate", "evaluate", move |job| {
            let tree = tree_from_wire(&r.nodes, job.edges.num_features(), job.num_classes)?;
            Ok(confusion_response(tasks::evaluate(job, &tree)))
        })
        .await
    }

    async fn train_local_tree(&self, request: Request<v1::TrainLocalTreeRequest>) -> Result<Response<v1::TrainLocalTreeResponse>, Status> {
        let r = request.into_inner();
        let params = LocalTreeParams {
            max_depth: r.max_depth as usize,
            min_instances_per_node: usize::try_from(r.min_instances_per_node).unwrap_or(usize::MAX),
            min_info_gain: r.min_info_gain,
            entropy: r.impurity == "entropy",
        };
        self.answer(r.job_id, "train_local_tree", "train_local", move |job| {
            let (tree_json, rows) = tasks::train_local_tree(job, &params)?;
            Ok(v1::TrainLocalTreeResponse { tree_json, rows })
        })
        .await
    }

    async fn evaluate_ensemble(&self, request: Request<v1::EvaluateEnsembleRequest>) -> Result<Response<v1::EvaluateResponse>, Status> {
        let r = request.into_inner();
        self.answer(r.job_id, "evaluate_ensemble", "evaluate", move |job| {
            Ok(confusion_response(tasks::evaluate_ensemble(job, &r.trees_json)?))
        })
        .await
    }

    async fn heartbeat(&self, _request: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        Ok(Response::new(v1::HeartbeatResponse {
            heap_bytes: canopy_runtime::heap::live_bytes(),
            peak_heap_bytes: canopy_runtime::heap::peak_bytes(),
            running_tasks: u32::try_from(self.inner.metrics.running.get()).unwrap_or(0),
        }))
    }

    #[instrument(skip_all, fields(executor = %self.inner.executor_id, job = %request.get_ref().job_id))]
    async fn end_job(&self, request: Request<v1::EndJobRequest>) -> Result<Response<v1::ExecutorStats>, Status> {
        let r = request.into_inner();
        let mut guard = self.inner.job.lock().map_err(|_| Status::internal("job state poisoned"))?;
        let job = guard.as_ref().ok_or(ExecutorError::NoJob)?;
        job.check_id(&r.job_id)?;
        let stats = v1::ExecutorStats {
            executor_id: self.inner.executor_id.clone(),
            tasks: job.stats.tasks,
            busy: job.stats.busy.iter().map(|(phase, d)| v1::PhaseSeconds { phase: phase.to_string(), seconds: d.as_secs_f64() }).collect(),
            bytes_received: job.stats.bytes_received,
            bytes_sent: job.stats.bytes_sent,
            peak_heap_bytes: canopy_runtime::heap::peak_bytes(),
            rows_held: job.rows_held(),
            peak_rss_bytes: canopy_runtime::peak_rss_bytes(),
        };
        *guard = None;
        self.inner.metrics.rows_held.set(0);
        info!(tasks = stats.tasks, "job ended");
        Ok(Response::new(stats))
    }
}

fn confusion_response(cm: ConfusionMatrix) -> v1::EvaluateResponse {
    v1::EvaluateResponse { num_classes: cm.num_classes as u32, confusion: cm.counts }
}

/// Arrow Flight: only DoPut is served, to receive partitions.
#[derive(Clone)]
pub struct PartitionReceiver {
    service: ExecutorService,
}

impl PartitionReceiver {
    pub fn new(service: ExecutorService) -> Self {
        PartitionReceiver { service }
    }
}

/// Stores one received partition: binned, and raw too in ensemble mode.
fn store_partition(job: &mut Job, descriptor: &v1::PartitionDescriptor, batches: &[RecordBatch]) -> Result<u64, ExecutorError> {
    let (binned, raw) = decode_partition(batches, &job.edges, job.num_classes, job.mode == Mode::Ensemble)?;
    let rows = binned.num_rows() as u64;
    let id = descriptor.partition_id;
    match v1::PartitionRole::try_from(descriptor.role) {
        Ok(v1::PartitionRole::Train) => {
            job.add_train(id, binned)?;
            if let Some(raw) = raw {
                job.raw_train.insert(id, raw);
            }
        }
        Ok(v1::PartitionRole::Test) => {
            job.test.insert(id, binned);
            if let Some(raw) = raw {
                job.raw_test.insert(id, raw);
            }
        }
        _ => return Err(ExecutorError::InvalidRequest(format!("partition {id} has no role"))),
    }
    Ok(rows)
}

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!("canopy executors only accept DoPut of partitions, not {what}")))
}

#[tonic::async_trait]
impl FlightService for PartitionReceiver {
    type HandshakeStream = FlightStream<FlightHandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let started = Instant::now();
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| Status::invalid_argument("empty DoPut stream"))?;
        let descriptor = first
            .flight_descriptor
            .as_ref()
            .map(|d: &FlightDescriptor| v1::PartitionDescriptor::decode(d.cmd.as_ref()))
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("flight descriptor is not a PartitionDescriptor: {e}")))?
            .ok_or_else(|| Status::invalid_argument("DoPut without a flight descriptor"))?;
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = received.clone();
        let data = stream::once(async { Ok(first) }).chain(incoming).map(move |m| {
            if let Ok(m) = &m {
                counter.fetch_add((m.data_header.len() + m.data_body.len() + m.app_metadata.len()) as u64, Ordering::Relaxed);
            }
            m.map_err(FlightError::from)
        });
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("partition {} is not valid Arrow data: {e}", descriptor.partition_id)))?;
        let receive_time = started.elapsed();
        let bytes = received.load(Ordering::Relaxed);
        let job_id = descriptor.job_id.clone();
        let metrics = &self.service.inner.metrics;
        metrics.received_bytes.inc_by(bytes);
        metrics.observe("load_partition", "receive", receive_time.as_secs_f64());
        let (rows, rows_held) = self
            .service
            .with_job(job_id, "load_partition", "bin", move |job| {
                job.stats.bytes_received += bytes;
                job.stats.add_time("receive", receive_time);
                let rows = store_partition(job, &descriptor, &batches)?;
                Ok((rows, job.rows_held()))
            })
            .await?;
        metrics.rows_held.set(i64::try_from(rows_held).unwrap_or(i64::MAX));
        let result = PutResult { app_metadata: rows.to_le_bytes().to_vec().into() };
        Ok(Response::new(stream::once(async { Ok(result) }).boxed()))
    }

    async fn handshake(&self, _r: Request<Streaming<FlightHandshakeRequest>>) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("Handshake")
    }
    async fn list_flights(&self, _r: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("ListFlights")
    }
    async fn get_flight_info(&self, _r: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        unsupported("GetFlightInfo")
    }
    async fn poll_flight_info(&self, _r: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }
    async fn get_schema(&self, _r: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }
    async fn do_get(&self, _r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        unsupported("DoGet")
    }
    async fn do_exchange(&self, _r: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("DoExchange")
    }
    async fn do_action(&self, _r: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("DoAction")
    }
    async fn list_actions(&self, _r: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("ListActions")
    }
}

//! gRPC handlers: they check the job, convert wire types, run the task off the async threads,
//! and count what they did. The work itself is in the tree crate's `LocalStats` (exact mode)
//! and in `ensemble`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
use canopy_proto::{PROTOCOL_VERSION, edges_from_wire, forest_from_wire, impurity_from_wire, partitions_from_wire, tree_from_wire};
use canopy_tree::{ConfusionMatrix, Model, PartitionId, Role, SplitDecision, StatsSource};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, instrument, warn};

use canopy_pipeline::partitions::PartitionReader;

use crate::ExecutorError;
use crate::ensemble::LocalTreeParams;
use crate::metrics::ExecutorMetrics;
use crate::store::Job;

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
    /// The last job ended and its statistics, so that a repeated EndJob gets the same answer.
    last_ended: Mutex<Option<(String, v1::ExecutorStats)>>,
    faults: FaultInjection,
    metrics: ExecutorMetrics,
    metrics_addr: String,
    incarnation: u64,
    decommissioning: AtomicBool,
    /// True while a job is active: a decommissioning executor waits for it to turn false.
    has_job: watch::Sender<bool>,
    /// Most heap bytes this executor may use (`--max-memory-mb`); a partition that would take
    /// more is refused before it is received.
    memory_budget: u64,
    /// Bytes promised to partitions being received.
    reserved: Arc<AtomicU64>,
}

impl ExecutorService {
    pub fn new(executor_id: String, faults: FaultInjection, metrics: ExecutorMetrics, metrics_addr: String, memory_budget: u64) -> Self {
        ExecutorService {
            inner: Arc::new(Inner {
                executor_id,
                job: Mutex::new(None),
                last_ended: Mutex::new(None),
                faults,
                metrics,
                metrics_addr,
                incarnation: incarnation(),
                decommissioning: AtomicBool::new(false),
                has_job: watch::channel(false).0,
                memory_budget,
                reserved: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// From now on no job is accepted, and heartbeats tell the driver to move our partitions.
    pub fn start_decommission(&self) {
        self.inner.decommissioning.store(true, Ordering::Relaxed);
    }

    /// Drops the active job, if any: its driver is gone or no longer knows us.
    pub fn abandon_job(&self) {
        if let Ok(mut guard) = self.inner.lock_job()
            && let Some(job) = guard.take()
        {
            warn!(job = %job.id, "dropping the job of a driver that no longer knows this executor");
            self.inner.has_job.send_replace(false);
            self.inner.metrics.rows_held.set(0);
        }
    }

    /// Checks a partition announced by its Flight descriptor before any of it is received: the
    /// job, that it is not held already, and that its rows fit the memory budget, which is then
    /// reserved until the returned guard drops. Also returns the most bytes its stream may take.
    fn admit_partition(&self, job_id: &str, partition: PartitionId, rows: u64) -> Result<(Reservation, u64), ExecutorError> {
        let guard = self.inner.lock_job()?;
        let job = guard.as_ref().ok_or(ExecutorError::NoJob)?;
        job.check_id(job_id)?;
        if job.stats.holds(partition) {
            return Err(canopy_tree::TreeError::DuplicatePartition { partition: partition.to_string() }.into());
        }
        let (wire, held) = job.bytes_per_row();
        let need = rows.saturating_mul(wire + held);
        let live = canopy_runtime::heap::live_bytes();
        let reserved = self.inner.reserved.load(Ordering::Relaxed);
        if live.saturating_add(reserved).saturating_add(need) > self.inner.memory_budget {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            return Err(ExecutorError::OverBudget(format!(
                "partition {partition} ({rows} rows) needs {:.1} MiB; this executor uses {:.1} MiB (+{:.1} MiB arriving) of its \
                 {:.1} MiB budget (--max-memory-mb)",
                mib(need),
                mib(live),
                mib(reserved),
                mib(self.inner.memory_budget)
            )));
        }
        self.inner.reserved.fetch_add(need, Ordering::Relaxed);
        // Arrow IPC framing and padding: a few percent, and a little per message.
        let wire_bytes = rows.saturating_mul(wire);
        Ok((Reservation { bytes: need, reserved: self.inner.reserved.clone() }, wire_bytes.saturating_add(wire_bytes / 16) + (1 << 20)))
    }

    /// Whether a job is active, and its changes.
    pub fn job_watch(&self) -> watch::Receiver<bool> {
        self.inner.has_job.subscribe()
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
            let mut guard = inner.lock_job()?;
            let job = guard.as_mut().ok_or(ExecutorError::NoJob)?;
            job.check_id(&job_id)?;
            let started = Instant::now();
            let out = work(job)?;
            let took = started.elapsed();
            job.counters.record(phase, took);
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
    /// sent, in the job's counters and the metrics, while the job is at hand.
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
                job.counters.bytes_sent += bytes;
                sent_bytes.inc_by(bytes);
                Ok(response)
            })
            .await?;
        Ok(Response::new(response))
    }
}

impl Inner {
    /// The job lock. A task that panicked while holding it left the job in an unknown state:
    /// that job is dropped (the driver sees it as lost and moves its partitions) and the
    /// executor goes on serving new jobs.
    fn lock_job(&self) -> Result<MutexGuard<'_, Option<Job>>, ExecutorError> {
        match self.job.lock() {
            Ok(guard) => Ok(guard),
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                *guard = None;
                self.job.clear_poison();
                self.has_job.send_replace(false);
                self.metrics.rows_held.set(0);
                warn!("a task panicked; its job was dropped");
                Err(ExecutorError::NoJob)
            }
        }
    }
}

/// Memory promised to a partition being received; given back when dropped.
struct Reservation {
    bytes: u64,
    reserved: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A number that differs between two starts of an executor: the clock's nanoseconds mixed with
/// the process id and the std library's per-process random hash keys.
fn incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

fn named(refs: &[v1::PartitionRef]) -> Result<Vec<PartitionId>, ExecutorError> {
    Ok(partitions_from_wire(refs)?)
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
            incarnation: self.inner.incarnation,
        }))
    }

    #[instrument(skip_all, fields(executor = %self.inner.executor_id, job = %request.get_ref().job_id))]
    async fn begin_job(&self, request: Request<v1::BeginJobRequest>) -> Result<Response<v1::BeginJobResponse>, Status> {
        let r = request.into_inner();
        let kind = crate::validate::begin_job(&r)?;
        let num_classes = r.num_classes as usize;
        if self.inner.decommissioning.load(Ordering::Relaxed) {
            return Err(ExecutorError::Decommissioning.into());
        }
        let edges = edges_from_wire(&r.features);
        let numbered = matches!(kind, crate::validate::JobKind::Forest(_));
        let mut job = Job::new(r.job_id.clone(), edges.clone(), num_classes, kind);
        if let Some(source) = &r.source {
            let (features, encoding, layout) = crate::validate::data_source(&r, source)?;
            if self.inner.lock_job()?.is_some() {
                return Err(ExecutorError::Busy.into());
            }
            // Opened (and the file checked against the driver's) before the job is accepted, so
            // an executor that cannot read the data never starts it.
            let location = std::path::Path::new(&source.location);
            let reader = PartitionReader::open(location, &source.version, &features.features, encoding, edges, layout, numbered)
                .await
                .map_err(ExecutorError::from)?;
            job.reader = Some(Arc::new(reader));
        }
        let mut guard = self.inner.lock_job()?;
        if guard.is_some() {
            return Err(ExecutorError::Busy.into());
        }
        *guard = Some(job);
        self.inner.has_job.send_replace(true);
        canopy_runtime::heap::reset_peak();
        self.inner.metrics.jobs.inc();
        self.inner.metrics.rows_held.set(0);
        info!(features = r.features.len(), num_classes, reads = r.source.as_ref().map(|s| s.location.as_str()), "job started");
        Ok(Response::new(v1::BeginJobResponse {}))
    }

    async fn apply_splits(&self, request: Request<v1::ApplySplitsRequest>) -> Result<Response<v1::ApplySplitsResponse>, Status> {
        let r = request.into_inner();
        let decisions = r.decisions.iter().map(SplitDecision::try_from).collect::<Result<Vec<_>, _>>().map_err(ExecutorError::from)?;
        let first = usize::try_from(r.first_index).map_err(|_| ExecutorError::InvalidRequest("first_index too large".into()))?;
        let partitions = named(&r.partitions)?;
        self.with_job(r.job_id, "apply_splits", "split", move |job| {
            job.stats.check_held(&partitions, Role::Train)?;
            Ok(job.stats.apply_splits(first, &decisions)?)
        })
        .await?;
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
        let partitions = named(&r.partitions)?;
        self.answer(r.job_id, "histograms", "histogram", move |job| {
            let nodes = crate::validate::histogram_nodes(&r.nodes, job.stats.layout().bytes_per_node())?;
            let histograms = job.stats.histograms_of(&partitions, &nodes)?;
            Ok(v1::BuildHistogramsResponse {
                histograms: r.nodes.iter().zip(histograms).map(|(&node, h)| v1::NodeHistogram { node, counts: h.counts }).collect(),
            })
        })
        .await
    }

    async fn evaluate(&self, request: Request<v1::EvaluateRequest>) -> Result<Response<v1::EvaluateResponse>, Status> {
        let r = request.into_inner();
        let partitions = named(&r.partitions)?;
        self.answer(r.job_id, "evaluate", "evaluate", move |job| {
            let (features, classes) = (job.edges.num_features(), job.num_classes);
            let confusion = match (job.stats.forest_trees(), r.forest.is_empty()) {
                (None, true) => job.stats.confusion_of(&partitions, Model::Tree(&tree_from_wire(&r.nodes, features, classes)?))?,
                (Some(_), false) if r.nodes.is_empty() => {
                    job.stats.confusion_of(&partitions, Model::Forest(&forest_from_wire(&r.forest, features, classes)?))?
                }
                _ => return Err(ExecutorError::InvalidRequest("a forest job evaluates a forest, other jobs a single tree".into())),
            };
            Ok(confusion_response(confusion))
        })
        .await
    }

    #[instrument(skip_all, fields(executor = %self.inner.executor_id))]
    async fn count_partitions(
        &self,
        request: Request<v1::CountPartitionsRequest>,
    ) -> Result<Response<v1::CountPartitionsResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let (features, layout) = crate::validate::count_partitions(&r)?;
        let metrics = self.inner.metrics.clone();
        metrics.running.inc();
        let handle = tokio::runtime::Handle::current();
        let counted = tokio::task::spawn_blocking(move || {
            let source = r.source.unwrap_or_default();
            let location = std::path::Path::new(&source.location);
            handle.block_on(canopy_pipeline::partitions::count(location, &source.version, &features.features, layout, &r.partitions))
        })
        .await
        .map_err(|e| ExecutorError::TaskAborted(e.to_string()))
        .and_then(|counted| counted.map_err(ExecutorError::from));
        metrics.running.dec();
        metrics.task_done("count_partitions", counted.is_ok());
        let (counts, per_partition) = counted?;
        let counts_json = serde_json::to_vec(&counts).map_err(|e| ExecutorError::TaskAborted(format!("cannot encode the counts: {e}")))?;
        // The driver decodes answers up to MAX_MESSAGE_BYTES; a continuous feature has as many
        // distinct values as rows.
        if counts_json.len() > canopy_proto::MAX_MESSAGE_BYTES / 2 {
            return Err(ExecutorError::InvalidRequest(format!(
                "the counts take {} bytes, more than an answer may (too many distinct feature values to count here; read with \
                 --read-by driver)",
                counts_json.len()
            ))
            .into());
        }
        metrics.observe("count_partitions", "count", started.elapsed().as_secs_f64());
        metrics.sent_bytes.inc_by(counts_json.len() as u64);
        info!(partitions = per_partition.len(), rows = counts.rows_read, seconds = started.elapsed().as_secs_f64(), "counted partitions");
        Ok(Response::new(v1::CountPartitionsResponse {
            counts_json,
            train_rows: per_partition.iter().map(|t| t[0]).collect(),
            test_rows: per_partition.iter().map(|t| t[1]).collect(),
        }))
    }

    #[instrument(skip_all, fields(executor = %self.inner.executor_id, job = %request.get_ref().job_id))]
    async fn load_partitions(&self, request: Request<v1::LoadPartitionsRequest>) -> Result<Response<v1::LoadPartitionsResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let partitions = named(&r.partitions)?;
        if r.rows.len() != partitions.len() {
            return Err(ExecutorError::InvalidRequest(format!("{} partitions but {} row counts", partitions.len(), r.rows.len())).into());
        }
        let distinct: std::collections::BTreeSet<_> = partitions.iter().collect();
        if distinct.len() != partitions.len() {
            return Err(ExecutorError::InvalidRequest("a partition is named twice".into()).into());
        }
        // Checked and reserved before anything is read: the job, that it reads its own rows,
        // each partition's index, that none is held, and the memory their declared rows take.
        let (service, job_id) = (self.clone(), r.job_id.clone());
        let wanted: Vec<(PartitionId, u64)> = partitions.into_iter().zip(r.rows).collect();
        let admitted = wanted.clone();
        let (reader, _reservations) = tokio::task::spawn_blocking(move || {
            let reader = {
                let guard = service.inner.lock_job()?;
                let job = guard.as_ref().ok_or(ExecutorError::NoJob)?;
                job.check_id(&job_id)?;
                job.reader.clone().ok_or_else(|| ExecutorError::InvalidRequest("this job's partitions are sent, not read".into()))?
            };
            if let Some((p, _)) = admitted.iter().find(|(p, _)| p.index >= reader.partitions()) {
                return Err(ExecutorError::InvalidRequest(format!("partition {p} is beyond the job's {} partitions", reader.partitions())));
            }
            let reservations =
                admitted.iter().map(|(p, rows)| service.admit_partition(&job_id, *p, *rows)).collect::<Result<Vec<_>, _>>()?;
            Ok::<_, ExecutorError>((reader, reservations))
        })
        .await
        .map_err(|e| ExecutorError::TaskAborted(e.to_string()))??;
        // Each range of rows is read once for both its training and its test partition.
        let handle = tokio::runtime::Handle::current();
        let to_read = wanted.clone();
        let batches = tokio::task::spawn_blocking(move || {
            handle.block_on(async {
                let mut batches: Vec<(PartitionId, u64, RecordBatch)> = Vec::with_capacity(to_read.len());
                let indexes: Vec<u32> =
                    to_read.iter().map(|(p, _)| p.index).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
                for (index, [train, test]) in indexes.iter().zip(reader.read(&indexes).await?) {
                    for (role, chunk) in [(Role::Train, train), (Role::Test, test)] {
                        if let Some((p, rows)) = to_read.iter().find(|(p, _)| p.index == *index && p.role == role) {
                            batches.push((*p, *rows, reader.batch(chunk)?));
                        }
                    }
                }
                Ok::<_, ExecutorError>(batches)
            })
        })
        .await
        .map_err(|e| ExecutorError::TaskAborted(e.to_string()))??;
        let read_time = started.elapsed();
        let metrics = &self.inner.metrics;
        metrics.observe("load_partition", "read", read_time.as_secs_f64());
        let (rows, rows_held) = self
            .with_job(r.job_id, "load_partition", "bin", move |job| {
                job.counters.add_time("read", read_time);
                let mut stored: Vec<PartitionId> = Vec::new();
                let mut rows = 0;
                for (p, declared, batch) in &batches {
                    match job.store(*p, *declared, std::slice::from_ref(batch)) {
                        Ok(n) => {
                            rows += n;
                            stored.push(*p);
                        }
                        Err(e) => {
                            // All or nothing: the driver moves none of them here.
                            stored.into_iter().for_each(|p| _ = job.release(p));
                            return Err(e);
                        }
                    }
                }
                Ok((rows, job.rows_held()))
            })
            .await?;
        metrics.rows_held.set(i64::try_from(rows_held).unwrap_or(i64::MAX));
        info!(partitions = wanted.len(), rows, seconds = read_time.as_secs_f64(), "read partitions");
        Ok(Response::new(v1::LoadPartitionsResponse { rows }))
    }

    async fn release_partition(
        &self,
        request: Request<v1::ReleasePartitionRequest>,
    ) -> Result<Response<v1::ReleasePartitionResponse>, Status> {
        let r = request.into_inner();
        let id = PartitionId::try_from(
            r.partition.as_ref().ok_or(canopy_proto::WireError::Missing { field: "partition" }).map_err(ExecutorError::from)?,
        )
        .map_err(ExecutorError::from)?;
        let metrics = self.inner.metrics.clone();
        let rows = self
            .with_job(r.job_id, "release_partition", "release", move |job| {
                let rows = job.release(id);
                metrics.rows_held.set(i64::try_from(job.rows_held()).unwrap_or(i64::MAX));
                Ok(rows)
            })
            .await?;
        Ok(Response::new(v1::ReleasePartitionResponse { rows }))
    }

    async fn train_local_tree(&self, request: Request<v1::TrainLocalTreeRequest>) -> Result<Response<v1::TrainLocalTreeResponse>, Status> {
        let r = request.into_inner();
        let params = LocalTreeParams {
            max_depth: r.max_depth as usize,
            min_instances_per_node: usize::try_from(r.min_instances_per_node).unwrap_or(usize::MAX),
            min_info_gain: r.min_info_gain,
            impurity: impurity_from_wire(r.impurity).map_err(ExecutorError::from)?,
        };
        let partitions = named(&r.partitions)?;
        self.answer(r.job_id, "train_local_tree", "train_local", move |job| {
            let features = job.edges.num_features();
            let ensemble = job.ensemble.as_ref().ok_or_else(|| ExecutorError::InvalidRequest("the job is not in ensemble mode".into()))?;
            let (tree_json, rows) = ensemble.train_local_tree(&partitions, features, &params)?;
            Ok(v1::TrainLocalTreeResponse { tree_json, rows })
        })
        .await
    }

    async fn evaluate_ensemble(&self, request: Request<v1::EvaluateEnsembleRequest>) -> Result<Response<v1::EvaluateResponse>, Status> {
        let r = request.into_inner();
        let partitions = named(&r.partitions)?;
        self.answer(r.job_id, "evaluate_ensemble", "evaluate", move |job| {
            let (features, classes) = (job.edges.num_features(), job.num_classes);
            let ensemble = job.ensemble.as_ref().ok_or_else(|| ExecutorError::InvalidRequest("the job is not in ensemble mode".into()))?;
            Ok(confusion_response(ensemble.evaluate(&partitions, &r.trees_json, features, classes)?))
        })
        .await
    }

    async fn heartbeat(&self, _request: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        Ok(Response::new(v1::HeartbeatResponse {
            heap_bytes: canopy_runtime::heap::live_bytes(),
            peak_heap_bytes: canopy_runtime::heap::peak_bytes(),
            running_tasks: u32::try_from(self.inner.metrics.running.get()).unwrap_or(0),
            decommissioning: self.inner.decommissioning.load(Ordering::Relaxed),
        }))
    }

    #[instrument(skip_all, fields(executor = %self.inner.executor_id, job = %request.get_ref().job_id))]
    async fn end_job(&self, request: Request<v1::EndJobRequest>) -> Result<Response<v1::ExecutorStats>, Status> {
        let r = request.into_inner();
        let mut guard = self.inner.lock_job()?;
        let Some(job) = guard.as_ref().filter(|job| job.id == r.job_id) else {
            // Ending a job twice is harmless: the second call gets the first one's answer.
            let last = self.inner.last_ended.lock().map_err(|_| Status::internal("job statistics lock poisoned"))?;
            return match last.as_ref() {
                Some((id, stats)) if *id == r.job_id => Ok(Response::new(stats.clone())),
                _ if guard.is_some() => Err(ExecutorError::WrongJob { requested: r.job_id }.into()),
                _ => Err(ExecutorError::NoJob.into()),
            };
        };
        let c = &job.counters;
        let stats = v1::ExecutorStats {
            executor_id: self.inner.executor_id.clone(),
            tasks: c.tasks,
            busy: c.busy.iter().map(|(phase, d)| v1::PhaseSeconds { phase: phase.to_string(), seconds: d.as_secs_f64() }).collect(),
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
            peak_heap_bytes: canopy_runtime::heap::peak_bytes(),
            rows_held: job.rows_held(),
            peak_rss_bytes: canopy_runtime::peak_rss_bytes(),
        };
        *guard = None;
        drop(guard);
        if let Ok(mut last) = self.inner.last_ended.lock() {
            *last = Some((r.job_id, stats.clone()));
        }
        self.inner.has_job.send_replace(false);
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

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

/// A received Flight message whose IPC header is consistent with its body (see
/// `check_ipc_message`); the Flight decoder may read it.
pub fn checked_flight_data(m: FlightData) -> Result<FlightData, FlightError> {
    canopy_proto::partition::check_ipc_message(&m.data_header, m.data_body.len()).map_err(|e| FlightError::ProtocolError(e.to_string()))?;
    Ok(m)
}

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
        let partition = descriptor
            .partition
            .as_ref()
            .ok_or(canopy_proto::WireError::Missing { field: "partition" })
            .and_then(PartitionId::try_from)
            .map_err(ExecutorError::from)?;
        let declared_rows = descriptor.rows;
        // Off the async threads: the job lock may be held by a task running on a blocking thread.
        let (service, job_id) = (self.service.clone(), descriptor.job_id.clone());
        let (_reservation, max_bytes) = tokio::task::spawn_blocking(move || service.admit_partition(&job_id, partition, declared_rows))
            .await
            .map_err(|e| ExecutorError::TaskAborted(e.to_string()))??;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let data = stream::once(async { Ok(first) }).chain(incoming).map(move |m| {
            let m = checked_flight_data(m?)?;
            let total = counter.fetch_add((m.data_header.len() + m.data_body.len() + m.app_metadata.len()) as u64, Ordering::Relaxed);
            if total > max_bytes {
                return Err(FlightError::ProtocolError(format!("more than {max_bytes} bytes for {declared_rows} declared rows")));
            }
            Ok(m)
        });
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("partition {partition} is not valid Arrow data: {e}")))?;
        let receive_time = started.elapsed();
        let bytes = received.load(Ordering::Relaxed);
        let job_id = descriptor.job_id.clone();
        let metrics = &self.service.inner.metrics;
        metrics.received_bytes.inc_by(bytes);
        metrics.observe("load_partition", "receive", receive_time.as_secs_f64());
        let (rows, rows_held) = self
            .service
            .with_job(job_id, "load_partition", "bin", move |job| {
                job.counters.bytes_received += bytes;
                job.counters.add_time("receive", receive_time);
                let rows = job.store(partition, declared_rows, &batches)?;
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

//! Work on executors: shipping partitions, fan-out of tasks, merging answers, and recovery.
//!
//! Every task goes to all live executors at once. If one fails in a way worth retrying
//! (connection lost, deadline passed, heartbeats stopped), it is declared dead, its partitions
//! are shipped to the survivors (who replay the split log for them) and the whole step is
//! asked again. Answers are integer counts, so the result is the same bits as without failure.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use canopy_proto::v1::{self, PartitionRole};
use canopy_proto::{FLIGHT_CHUNK_BYTES, edges_to_wire, tree_to_wire};
use canopy_tree::{ConfusionMatrix, HistogramLayout, NodeHistogram, NodeId, SplitDecision, StatsSource, Tree};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use serde::Serialize;
use tonic::{Code, Status};
use tracing::{info, warn};

use crate::cluster::ExecutorHandle;
use crate::config::Mode;
use crate::data::Prepared;
use crate::error::{DriverError, Result};
use crate::metrics::DriverMetrics;

/// A partition: training or test, and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionRef {
    pub test: bool,
    pub id: u32,
}

/// An executor that was lost during the run.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRecord {
    pub executor_id: String,
    pub during: String,
    pub error: String,
    pub partitions_reassigned: usize,
}

/// What the driver shipped and received, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficStats {
    pub partition_bytes_sent: u64,
    pub control_bytes_sent: u64,
    pub control_bytes_received: u64,
    /// Driver time spent waiting on executors for histograms and merging them.
    pub histogram_wait_seconds: f64,
    pub merge_seconds: f64,
    /// Driver time spent waiting for executors to apply splits.
    pub split_wait_seconds: f64,
    /// Every round trip of the tree growth, in order: what a scaling model is fitted to.
    pub rounds: Vec<Round>,
}

/// One fan-out of the grower to every executor and the answers' merge.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// "histograms" or "apply_splits".
    pub kind: &'static str,
    /// Nodes asked for (histograms) or split (apply_splits).
    pub nodes: usize,
    pub executors: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub wait_seconds: f64,
    pub merge_seconds: f64,
}

enum CallError {
    /// The executor is gone or silent: reassign its work and try again.
    Lost(String),
    /// The executor answered with an error that a retry would repeat.
    Fatal(String),
}

fn classify(status: &Status) -> CallError {
    let text = format!("{}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => CallError::Lost(text),
        _ => CallError::Fatal(text),
    }
}

pub struct Dispatcher {
    prepared: Arc<Prepared>,
    job_id: String,
    mode: Mode,
    executors: Vec<ExecutorHandle>,
    alive: Vec<bool>,
    assignment: BTreeMap<PartitionRef, usize>,
    task_timeout: Duration,
    metrics: DriverMetrics,
    pub failures: Vec<FailureRecord>,
    pub retries: u64,
    pub traffic: TrafficStats,
}

impl Dispatcher {
    pub fn new(
        prepared: Arc<Prepared>,
        job_id: String,
        mode: Mode,
        executors: Vec<ExecutorHandle>,
        task_timeout: Duration,
        metrics: DriverMetrics,
    ) -> Self {
        let alive = vec![true; executors.len()];
        metrics.executors_joined(executors.len());
        Dispatcher {
            prepared,
            job_id,
            mode,
            executors,
            alive,
            assignment: BTreeMap::new(),
            task_timeout,
            metrics,
            failures: Vec::new(),
            retries: 0,
            traffic: TrafficStats::default(),
        }
    }

    pub fn executors(&self) -> &[ExecutorHandle] {
        &self.executors
    }
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    fn count_sent(&mut self, partition_bytes: u64, control_bytes: u64) {
        self.traffic.partition_bytes_sent += partition_bytes;
        self.traffic.control_bytes_sent += control_bytes;
        self.metrics.bytes_sent.inc_by(partition_bytes + control_bytes);
    }

    fn count_received(&mut self, bytes: u64) {
        self.traffic.control_bytes_received += bytes;
        self.metrics.bytes_received.inc_by(bytes);
    }

    fn retried(&mut self) {
        self.retries += 1;
        self.metrics.tasks_retried.inc();
    }

    fn live(&self) -> Vec<usize> {
        (0..self.executors.len()).filter(|&i| self.alive[i]).collect()
    }

    /// Runs `fut` against executor `i` with the task deadline, giving up if it is declared dead.
    async fn guarded<T>(
        &self,
        i: usize,
        fut: impl Future<Output = std::result::Result<T, CallError>>,
    ) -> std::result::Result<T, CallError> {
        let mut dead = self.executors[i].dead.clone();
        tokio::select! {
            r = tokio::time::timeout(self.task_timeout, fut) => {
                r.unwrap_or_else(|_| Err(CallError::Lost(format!("no answer within the {} s task deadline", self.task_timeout.as_secs_f64()))))
            }
            _ = dead.wait_for(|d| *d) => Err(CallError::Lost("heartbeats stopped".into())),
        }
    }

    /// Calls every live executor; on losses, reassigns and calls again until all answer.
    async fn on_all<T, F, Fut>(&mut self, during: &str, call: F) -> Result<Vec<(usize, T)>>
    where
        F: Fn(usize, v1::executor_client::ExecutorClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        loop {
            let live = self.live();
            self.metrics.tasks_moved(0, live.len() as i64);
            let calls = live.iter().map(|&i| {
                let fut = call(i, self.executors[i].control.clone());
                self.guarded(i, async move { fut.await.map_err(|s| classify(&s)) })
            });
            let results = futures::future::join_all(calls).await;
            self.metrics.tasks_moved(0, -(live.len() as i64));
            let mut answers = Vec::with_capacity(live.len());
            let mut lost = Vec::new();
            for (&i, result) in live.iter().zip(results) {
                match result {
                    Ok(answer) => answers.push((i, answer)),
                    Err(CallError::Lost(reason)) => lost.push((i, reason)),
                    Err(CallError::Fatal(reason)) => {
                        return Err(DriverError::TaskFailed { executor: self.executors[i].id.clone(), reason });
                    }
                }
            }
            if lost.is_empty() {
                return Ok(answers);
            }
            for (i, reason) in lost {
                self.lose(i, during, reason)?;
            }
            self.reassign().await?;
            self.retried();
        }
    }

    /// Marks executor `i` dead; fails the run if none is left.
    fn lose(&mut self, i: usize, during: &str, error: String) -> Result<()> {
        if !self.alive[i] {
            return Ok(());
        }
        self.alive[i] = false;
        self.executors[i].declare_dead();
        self.metrics.executor_lost();
        let orphans = self.assignment.values().filter(|&&e| e == i).count();
        warn!(executor = %self.executors[i].id, during, %error, orphans, "executor lost; reassigning its partitions");
        self.failures.push(FailureRecord {
            executor_id: self.executors[i].id.clone(),
            during: during.to_string(),
            error: error.clone(),
            partitions_reassigned: orphans,
        });
        if self.live().is_empty() {
            return Err(DriverError::NoExecutorsLeft { count: self.executors.len(), last_failure: error });
        }
        Ok(())
    }

    /// Starts the job everywhere and ships every partition (partition p to executor p mod n).
    pub async fn begin(&mut self) -> Result<()> {
        let request = v1::BeginJobRequest {
            job_id: self.job_id.clone(),
            features: edges_to_wire(&self.prepared.edges),
            num_classes: self.prepared.num_classes() as u32,
            mode: match self.mode {
                Mode::Exact => v1::JobMode::Exact,
                Mode::Ensemble => v1::JobMode::Ensemble,
            } as i32,
        };
        self.count_sent(0, (request.encoded_len() * self.executors.len()) as u64);
        self.on_all("begin job", |_, mut c| {
            let r = request.clone();
            async move { c.begin_job(r).await.map(|_| ()) }
        })
        .await?;
        let n = self.executors.len();
        for (test, count) in [(false, self.prepared.train.len()), (true, self.prepared.test.len())] {
            for id in 0..count {
                self.assignment.insert(PartitionRef { test, id: id as u32 }, id % n);
            }
        }
        let all: Vec<PartitionRef> = self.assignment.keys().copied().collect();
        self.ship(all, "ship partitions").await
    }

    /// Ships `parts` to their assigned executors, each executor's in order, all at once.
    async fn ship(&mut self, parts: Vec<PartitionRef>, during: &str) -> Result<()> {
        let mut pending = parts;
        while !pending.is_empty() {
            let mut by_executor: BTreeMap<usize, Vec<PartitionRef>> = BTreeMap::new();
            for p in &pending {
                by_executor.entry(self.assignment[p]).or_default().push(*p);
            }
            self.metrics.tasks_moved(pending.len() as i64, 0);
            let sends = by_executor.iter().map(|(&i, parts)| {
                let channel = self.executors[i].channel.clone();
                let batches: Vec<(PartitionRef, RecordBatch)> = parts.iter().map(|p| (*p, self.batch(*p).clone())).collect();
                let job_id = self.job_id.clone();
                let metrics = self.metrics.clone();
                self.guarded(i, async move {
                    let mut bytes = 0;
                    for (p, batch) in batches {
                        metrics.tasks_moved(-1, 1);
                        let sent = put_partition(channel.clone(), &job_id, p, batch).await;
                        metrics.tasks_moved(0, -1);
                        bytes += sent?;
                    }
                    Ok(bytes)
                })
            });
            let results = futures::future::join_all(sends).await;
            self.metrics.pending_cleared();
            let mut lost = Vec::new();
            for ((&i, _), result) in by_executor.iter().zip(results) {
                match result {
                    Ok(bytes) => self.count_sent(bytes, 0),
                    Err(CallError::Lost(reason)) => lost.push((i, reason)),
                    Err(CallError::Fatal(reason)) => {
                        return Err(DriverError::TaskFailed { executor: self.executors[i].id.clone(), reason });
                    }
                }
            }
            pending.clear();
            for (i, reason) in lost {
                self.lose(i, during, reason)?;
                self.retried();
            }
            pending.extend(self.reassign_targets());
        }
        Ok(())
    }

    /// Moves partitions of dead executors to live ones, round-robin, and returns them.
    fn reassign_targets(&mut self) -> Vec<PartitionRef> {
        let live = self.live();
        let orphans: Vec<PartitionRef> = self.assignment.iter().filter(|(_, e)| !self.alive[**e]).map(|(p, _)| *p).collect();
        for (k, p) in orphans.iter().enumerate() {
            self.assignment.insert(*p, live[k % live.len()]);
        }
        orphans
    }

    async fn reassign(&mut self) -> Result<()> {
        let moved = self.reassign_targets();
        if !moved.is_empty() {
            info!(partitions = moved.len(), "re-sending partitions of lost executors");
            self.ship(moved, "re-send partitions").await?;
        }
        Ok(())
    }

    fn batch(&self, p: PartitionRef) -> &RecordBatch {
        if p.test { &self.prepared.test[p.id as usize] } else { &self.prepared.train[p.id as usize] }
    }

    pub async fn histograms(&mut self, nodes: &[NodeId], layout: &HistogramLayout) -> Result<Vec<NodeHistogram>> {
        let request = v1::BuildHistogramsRequest { job_id: self.job_id.clone(), nodes: nodes.iter().map(|n| n.0).collect() };
        let waited = Instant::now();
        let answers = self
            .on_all("histograms", |_, mut c| {
                let r = request.clone();
                async move { c.build_histograms(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        let wait_seconds = waited.elapsed().as_secs_f64();
        self.traffic.histogram_wait_seconds += wait_seconds;
        let bytes_sent = (request.encoded_len() * answers.len()) as u64;
        self.count_sent(0, bytes_sent);
        let merging = Instant::now();
        let mut merged = vec![NodeHistogram::zeros(layout); nodes.len()];
        let mut bytes_received = 0;
        let executors = answers.len();
        for (i, answer) in answers {
            bytes_received += answer.encoded_len() as u64;
            if answer.histograms.len() != nodes.len() {
                return Err(DriverError::TaskFailed {
                    executor: self.executors[i].id.clone(),
                    reason: format!("returned {} histograms for {} nodes", answer.histograms.len(), nodes.len()),
                });
            }
            for (slot, h) in merged.iter_mut().zip(answer.histograms) {
                slot.merge(&NodeHistogram::from_counts(h.node, h.counts, layout)?);
            }
        }
        self.count_received(bytes_received);
        let merge_seconds = merging.elapsed().as_secs_f64();
        self.traffic.merge_seconds += merge_seconds;
        self.traffic.rounds.push(Round {
            kind: "histograms",
            nodes: nodes.len(),
            executors,
            bytes_sent,
            bytes_received,
            wait_seconds,
            merge_seconds,
        });
        Ok(merged)
    }

    pub async fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<()> {
        let request = v1::ApplySplitsRequest {
            job_id: self.job_id.clone(),
            first_index: first_index as u64,
            decisions: decisions.iter().map(v1::SplitDecision::from).collect(),
        };
        let waited = Instant::now();
        let answers = self
            .on_all("apply splits", |_, mut c| {
                let r = request.clone();
                async move { c.apply_splits(r).await.map(|_| ()) }
            })
            .await?;
        let wait_seconds = waited.elapsed().as_secs_f64();
        self.traffic.split_wait_seconds += wait_seconds;
        let bytes_sent = (request.encoded_len() * answers.len()) as u64;
        self.count_sent(0, bytes_sent);
        let round = Round {
            kind: "apply_splits",
            nodes: decisions.len(),
            executors: answers.len(),
            bytes_sent,
            bytes_received: 0,
            wait_seconds,
            merge_seconds: 0.0,
        };
        self.traffic.rounds.push(round);
        Ok(())
    }

    fn merge_confusion(&mut self, answers: Vec<(usize, v1::EvaluateResponse)>) -> Result<ConfusionMatrix> {
        let k = self.prepared.num_classes();
        let mut cm = ConfusionMatrix::new(k);
        for (i, answer) in answers {
            self.count_received(answer.encoded_len() as u64);
            if answer.confusion.len() != k * k {
                return Err(DriverError::TaskFailed {
                    executor: self.executors[i].id.clone(),
                    reason: format!("confusion matrix has {} cells, expected {}", answer.confusion.len(), k * k),
                });
            }
            cm.merge(&ConfusionMatrix { num_classes: k, counts: answer.confusion });
        }
        Ok(cm)
    }

    pub async fn evaluate(&mut self, tree: &Tree) -> Result<ConfusionMatrix> {
        let request = v1::EvaluateRequest { job_id: self.job_id.clone(), nodes: tree_to_wire(tree) };
        let answers = self
            .on_all("evaluate", |_, mut c| {
                let r = request.clone();
                async move { c.evaluate(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.count_sent(0, (request.encoded_len() * answers.len()) as u64);
        self.merge_confusion(answers)
    }

    /// Ensemble mode: one linfa tree per live executor, in executor order.
    pub async fn train_local_trees(&mut self, request: v1::TrainLocalTreeRequest) -> Result<Vec<Vec<u8>>> {
        let answers = self
            .on_all("train local trees", |_, mut c| {
                let r = request.clone();
                async move { c.train_local_tree(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(answers.into_iter().map(|(_, a)| a.tree_json).collect())
    }

    pub async fn evaluate_ensemble(&mut self, trees_json: Vec<Vec<u8>>) -> Result<ConfusionMatrix> {
        let request = v1::EvaluateEnsembleRequest { job_id: self.job_id.clone(), trees_json };
        let answers = self
            .on_all("evaluate ensemble", |_, mut c| {
                let r = request.clone();
                async move { c.evaluate_ensemble(r).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.merge_confusion(answers)
    }

    /// Ends the job on every live executor and returns their statistics, in executor order.
    pub async fn end(&mut self) -> Result<Vec<(usize, v1::ExecutorStats)>> {
        let request = v1::EndJobRequest { job_id: self.job_id.clone() };
        self.on_all("end job", |_, mut c| {
            let r = request.clone();
            async move { c.end_job(r).await.map(|r| r.into_inner()) }
        })
        .await
    }
}

/// Sends one partition with Arrow Flight DoPut, in chunks under the message limit.
async fn put_partition(
    channel: tonic::transport::Channel,
    job_id: &str,
    p: PartitionRef,
    batch: RecordBatch,
) -> std::result::Result<u64, CallError> {
    let descriptor = v1::PartitionDescriptor {
        job_id: job_id.to_string(),
        partition_id: p.id,
        role: if p.test { PartitionRole::Test } else { PartitionRole::Train } as i32,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let stream = FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(FLIGHT_CHUNK_BYTES)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(descriptor.encode_to_vec())))
        .build(futures::stream::iter([Ok(batch)]))
        .inspect(move |m| {
            if let Ok(m) = m {
                counter.fetch_add((m.data_header.len() + m.data_body.len()) as u64, Ordering::Relaxed);
            }
        });
    let mut client = FlightClient::new(channel);
    let flight_error = |e: FlightError| match e {
        FlightError::Tonic(status) => classify(&status),
        other => CallError::Fatal(other.to_string()),
    };
    let results: Vec<_> = client.do_put(stream).await.map_err(flight_error)?.try_collect().await.map_err(flight_error)?;
    if results.is_empty() {
        return Err(CallError::Fatal(format!("partition {} was not acknowledged", p.id)));
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// The grower's view of the cluster: blocking calls on the runtime, from a blocking thread.
pub struct RemoteStats {
    pub dispatcher: Dispatcher,
    pub handle: tokio::runtime::Handle,
    pub layout: HistogramLayout,
}

impl StatsSource for RemoteStats {
    type Error = DriverError;

    fn histograms(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeHistogram>> {
        let layout = self.layout.clone();
        self.handle.block_on(self.dispatcher.histograms(nodes, &layout))
    }

    fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<()> {
        self.handle.block_on(self.dispatcher.apply_splits(first_index, decisions))
    }
}

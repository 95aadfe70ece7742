//! Work on executors: partitions and who holds them, tasks that name their partitions, merging
//! answers, and the changes of the executor set while a job runs.
//!
//! The partition is the unit. Every partition has one owner, the executor that acknowledged it
//! last; a task goes to each owner and names exactly the partitions it owns, so a partition is
//! counted once even right after it moved. At every step boundary (`sync`) the dispatcher
//! looks at the registry: executors that registered since join (job started, partitions moved
//! to them), decommissioning ones leave (partitions moved away, then their job ends), and
//! partitions of lost executors go to the others. Moves keep rows balanced. A step whose
//! executor is lost mid-way asks again only for the partitions that were not answered.
//! Answers are integer counts, so the model is the same bits whatever joins, leaves or fails.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use canopy_proto::v1::executor_client::ExecutorClient;
use canopy_proto::v1::{self};
use canopy_proto::{
    ExecutorId, FLIGHT_CHUNK_BYTES, MAX_REQUEST_BYTES, edges_to_wire, forest_plan_to_wire, forest_to_wire, partitions_to_wire, tree_to_wire,
};
use canopy_runtime::security::AuthChannel;
use canopy_tree::{
    ConfusionMatrix, ForestPlan, HistogramLayout, Model, NodeHistogram, NodeId, PartitionId, Role, SplitDecision, StatsSource,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Code, Status};
use tracing::{info, warn};

use crate::cluster::ExecutorHandle;
use crate::config::Mode;
use crate::data::{Partitions, Prepared};
use crate::error::{DriverError, Result};
use crate::metrics::DriverMetrics;
use crate::registry::{Member, Registry};
use crate::results::{ExecutorReport, FailureRecord, MembershipChange, MembershipEvent, Round, TrafficStats};

/// How partitions reach their new owner.
enum Load {
    /// Sent over Arrow Flight, one stream each.
    Ship(Vec<(PartitionId, RecordBatch)>),
    /// Read by the executor itself from the job's data source.
    Read(v1::LoadPartitionsRequest),
}

pub(crate) enum CallError {
    /// The executor is gone, silent, or lost its job: move its partitions and ask again.
    Lost(String),
    /// The executor answered with an error that a retry would repeat.
    Fatal(String),
}

pub(crate) fn classify(status: &Status) -> CallError {
    let text = format!("{}: {}", status.code(), status.message());
    match status.code() {
        // FAILED_PRECONDITION from a task: the executor no longer holds our job or a partition
        // (it restarted): what it held must move, as for a crash.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted | Code::FailedPrecondition => {
            CallError::Lost(text)
        }
        _ => CallError::Fatal(text),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberStatus {
    Active,
    Left,
    Lost,
}

/// An executor as one run sees it.
struct RunMember {
    handle: ExecutorHandle,
    registered_at: Instant,
    joined_at_seconds: f64,
    registration_to_first_task: Option<f64>,
    /// Decisions of the split log it has applied.
    log_len: usize,
    status: MemberStatus,
    stats: Option<v1::ExecutorStats>,
}

/// What one executor is asked in a step: its partitions and where its split log stands.
pub(crate) struct Target {
    pub client: ExecutorClient<AuthChannel>,
    pub partitions: Vec<PartitionId>,
    pub log_len: usize,
}

pub struct Dispatcher {
    prepared: Arc<Prepared>,
    job_id: String,
    mode: Mode,
    /// Forest mode: the trees and row sampling every executor must use.
    forest: Option<v1::ForestSampling>,
    registry: Registry,
    /// Most executors this run uses at once.
    cap: usize,
    started: Instant,
    members: BTreeMap<ExecutorId, RunMember>,
    join_order: Vec<ExecutorId>,
    /// The executor that acknowledged each partition last. A partition whose owner is not
    /// active is orphaned and moves at the next sync.
    owner: BTreeMap<PartitionId, ExecutorId>,
    /// The whole split log, for executors that join or receive partitions late.
    log: Vec<SplitDecision>,
    task_timeout: Duration,
    metrics: DriverMetrics,
    warned_no_successor: bool,
    /// Registered executors that could not start the job: not asked again in this run.
    refused: BTreeSet<ExecutorId>,
    /// Copies an executor still holds because releasing them failed; released again before a
    /// partition moves back there (the executor would refuse a second copy).
    unreleased: BTreeSet<(ExecutorId, PartitionId)>,
    pub failures: Vec<FailureRecord>,
    pub membership: Vec<MembershipEvent>,
    pub retries: u64,
    pub traffic: TrafficStats,
}

impl Dispatcher {
    /// Starts the job on `initial` executors and ships every partition, balanced by rows.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        prepared: Arc<Prepared>,
        job_id: String,
        mode: Mode,
        forest: Option<&ForestPlan>,
        registry: Registry,
        initial: Vec<Member>,
        cap: usize,
        task_timeout: Duration,
        metrics: DriverMetrics,
    ) -> Result<Self> {
        let mut d = Dispatcher {
            prepared,
            job_id,
            mode,
            forest: forest.and_then(forest_plan_to_wire),
            registry,
            cap,
            started: Instant::now(),
            members: BTreeMap::new(),
            join_order: Vec::new(),
            owner: BTreeMap::new(),
            log: Vec::new(),
            task_timeout,
            metrics,
            warned_no_successor: false,
            refused: BTreeSet::new(),
            unreleased: BTreeSet::new(),
            failures: Vec::new(),
            membership: Vec::new(),
            retries: 0,
            traffic: TrafficStats::default(),
        };
        let begins = initial.iter().map(|m| d.begin_job(m.handle.clone()));
        let begun = futures::future::join_all(begins).await;
        for (member, result) in initial.into_iter().zip(begun) {
            match result {
                Ok(()) => d.admit(member, 0.0),
                Err(CallError::Lost(reason) | CallError::Fatal(reason)) => {
                    warn!(executor = %member.handle.id, %reason, "executor could not start the job");
                    d.refused.insert(member.handle.id.clone());
                    d.failures.push(FailureRecord {
                        executor_id: member.handle.id.0.clone(),
                        during: "begin job".into(),
                        error: reason,
                        partitions_reassigned: 0,
                    });
                }
            }
        }
        d.sync().await?;
        Ok(d)
    }

    fn admit(&mut self, member: Member, joined_at_seconds: f64) {
        let id = member.handle.id.clone();
        self.registry.set_busy(&id, true);
        self.members.insert(
            id.clone(),
            RunMember {
                handle: member.handle,
                registered_at: member.registered_at,
                joined_at_seconds,
                registration_to_first_task: None,
                log_len: 0,
                status: MemberStatus::Active,
                stats: None,
            },
        );
        self.join_order.push(id);
        self.metrics.run_members(self.active().len());
    }

    async fn begin_job(&self, handle: ExecutorHandle) -> std::result::Result<(), CallError> {
        let request = v1::BeginJobRequest {
            job_id: self.job_id.clone(),
            features: edges_to_wire(&self.prepared.edges),
            num_classes: self.prepared.num_classes() as u32,
            mode: match self.mode {
                Mode::Exact => v1::JobMode::Exact,
                Mode::Ensemble => v1::JobMode::Ensemble,
                Mode::Forest => v1::JobMode::Forest,
            } as i32,
            forest: self.forest,
            source: self.data_source(),
        };
        let mut client = handle.control.clone();
        self.guarded(&handle, async move { client.begin_job(request).await.map(|_| ()).map_err(|s| classify(&s)) }).await
    }

    /// Where executors read their own rows, when they do.
    fn data_source(&self) -> Option<v1::DataSource> {
        let Partitions::Read(plan) = &self.prepared.partitions else {
            return None;
        };
        Some(v1::DataSource {
            location: plan.location.clone(),
            version: plan.version.clone(),
            rows: plan.layout.rows,
            partitions: plan.layout.partitions,
            split_seed: plan.layout.seed,
            test_fraction: plan.layout.test_fraction,
            features_json: plan.features_json.clone(),
        })
    }

    /// Active executors, in join order.
    fn active(&self) -> Vec<ExecutorId> {
        self.join_order.iter().filter(|id| self.members[*id].status == MemberStatus::Active).cloned().collect()
    }

    fn rows_of(&self, p: PartitionId) -> u64 {
        self.prepared.rows_of(p)
    }

    fn partitions(&self, role: Role) -> Vec<PartitionId> {
        (0..self.prepared.partition_count() as u32).map(|index| PartitionId { role, index }).collect()
    }

    fn held_by(&self, id: &ExecutorId, role: Role) -> Vec<PartitionId> {
        self.owner.iter().filter(|(p, o)| *o == id && p.role == role).map(|(p, _)| *p).collect()
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

    fn step_count(&self) -> usize {
        self.traffic.rounds.len()
    }

    /// Runs `fut` against `handle` with the task deadline, giving up if it is declared dead.
    async fn guarded<T>(
        &self,
        handle: &ExecutorHandle,
        fut: impl Future<Output = std::result::Result<T, CallError>>,
    ) -> std::result::Result<T, CallError> {
        let mut dead = handle.dead.clone();
        tokio::select! {
            r = tokio::time::timeout(self.task_timeout, fut) => {
                r.unwrap_or_else(|_| Err(CallError::Lost(format!("no answer within the {} s task deadline", self.task_timeout.as_secs_f64()))))
            }
            _ = dead.wait_for(|d| *d) => Err(CallError::Lost("heartbeats stopped".into())),
        }
    }

    /// Declares `id` lost: its partitions are orphaned and move at the next sync.
    fn lose(&mut self, id: &ExecutorId, during: &str, error: String) {
        let Some(member) = self.members.get_mut(id) else {
            return;
        };
        if member.status != MemberStatus::Active {
            return;
        }
        member.status = MemberStatus::Lost;
        member.handle.declare_dead();
        let incarnation = member.handle.incarnation;
        // A restart of the same executor may have registered meanwhile: keep that one.
        if self.registry.get(id).is_some_and(|m| m.handle.incarnation == incarnation) {
            self.registry.remove(id);
        }
        self.metrics.executor_lost();
        self.metrics.run_members(self.active().len());
        let orphans = self.owner.values().filter(|o| *o == id).count();
        warn!(executor = %id, during, %error, orphans, "executor lost; reassigning its partitions");
        self.failures.push(FailureRecord { executor_id: id.0.clone(), during: during.to_string(), error, partitions_reassigned: orphans });
        self.record(MembershipChange::Lost, id, orphans, 0);
    }

    /// The step boundary: takes in executors that registered, lets decommissioning ones go,
    /// and moves partitions (orphaned, balancing, or away from leavers) until every partition
    /// is held by an active executor.
    pub async fn sync(&mut self) -> Result<()> {
        loop {
            let mut leaving: Vec<ExecutorId> = Vec::new();
            for id in self.active() {
                match self.registry.get(&id) {
                    // Out of the registry while working for us (declared dead by the heartbeat
                    // monitor, or replaced by a restart of the same executor), or silent.
                    None => self.lose(&id, "heartbeat", "heartbeats stopped".into()),
                    Some(_) if self.members[&id].handle.is_dead() => self.lose(&id, "heartbeat", "heartbeats stopped".into()),
                    Some(m) if m.leaving => leaving.push(id),
                    Some(_) => {}
                }
            }
            let joined = self.take_joiners(self.active().len() - leaving.len()).await;
            let active = self.active();
            let mut staying: Vec<ExecutorId> = active.iter().filter(|id| !leaving.contains(id)).cloned().collect();
            if staying.is_empty() {
                if active.is_empty() {
                    let last_failure = self.failures.last().map_or_else(|| "none started the job".to_string(), |f| f.error.clone());
                    return Err(DriverError::NoExecutorsLeft { count: self.members.len(), last_failure });
                }
                if !self.warned_no_successor {
                    warn!(
                        "every executor of the run is decommissioning and none is there to take its partitions; they keep working until one registers or they exit"
                    );
                    self.warned_no_successor = true;
                }
                staying = active;
            }
            let mut target = BTreeMap::new();
            if matches!(self.prepared.partitions, Partitions::Read(_)) {
                // An executor reads a range of rows once for its training and its test rows:
                // both partitions of a range have one owner, balanced by their rows together.
                let test = |p: PartitionId| PartitionId { role: Role::Test, index: p.index };
                let rows: BTreeMap<PartitionId, u64> =
                    self.partitions(Role::Train).into_iter().map(|p| (p, self.rows_of(p) + self.rows_of(test(p)))).collect();
                let current: BTreeMap<PartitionId, ExecutorId> = (self.owner.iter())
                    .filter(|(p, o)| p.role == Role::Train && staying.contains(o) && self.owner.get(&test(**p)) == Some(*o))
                    .map(|(p, o)| (*p, o.clone()))
                    .collect();
                for (p, to) in balance(&rows, &current, &staying) {
                    target.insert(test(p), to.clone());
                    target.insert(p, to);
                }
            } else {
                for role in [Role::Train, Role::Test] {
                    let rows: BTreeMap<PartitionId, u64> = self.partitions(role).into_iter().map(|p| (p, self.rows_of(p))).collect();
                    let current: BTreeMap<PartitionId, ExecutorId> =
                        self.owner.iter().filter(|(p, o)| p.role == role && staying.contains(o)).map(|(p, o)| (*p, o.clone())).collect();
                    target.extend(balance(&rows, &current, &staying));
                }
            }
            let moves: Vec<(PartitionId, ExecutorId)> = target.into_iter().filter(|(p, to)| self.owner.get(p) != Some(to)).collect();
            let lost_before = self.failures.len();
            let (moved_in, moved_out) = self.move_partitions(moves).await?;
            for id in &joined {
                let (partitions_moved, bytes_moved) = moved_in.get(id).copied().unwrap_or_default();
                info!(executor = %id, partitions = partitions_moved, bytes = bytes_moved, step = self.step_count(), "executor joined the job");
                self.record(MembershipChange::Join, id, partitions_moved, bytes_moved);
            }
            for (from, (_, bytes)) in &moved_out {
                if let Some(event) =
                    self.membership.iter_mut().rev().find(|e| e.change == MembershipChange::Lost && e.executor_id == from.0)
                {
                    event.bytes_moved += bytes;
                }
            }
            for id in leaving {
                if self.members[&id].status == MemberStatus::Active
                    && self.held_by(&id, Role::Train).is_empty()
                    && self.held_by(&id, Role::Test).is_empty()
                {
                    let (partitions_moved, bytes_moved) = moved_out.get(&id).copied().unwrap_or_default();
                    self.retire(&id, partitions_moved, bytes_moved).await;
                }
            }
            if self.failures.len() == lost_before {
                return Ok(());
            }
        }
    }

    /// Starts the job on executors that registered since, up to the cap; returns them.
    async fn take_joiners(&mut self, staying: usize) -> Vec<ExecutorId> {
        let room = self.cap.saturating_sub(staying);
        let candidates: Vec<Member> = self
            .registry
            .available()
            .into_iter()
            .filter(|m| !self.members.contains_key(&m.handle.id) && !self.refused.contains(&m.handle.id))
            .take(room)
            .collect();
        let mut joined = Vec::new();
        for member in candidates {
            match self.begin_job(member.handle.clone()).await {
                Ok(()) => {
                    joined.push(member.handle.id.clone());
                    let at = self.started.elapsed().as_secs_f64();
                    self.admit(member, at);
                }
                Err(CallError::Lost(reason) | CallError::Fatal(reason)) => {
                    warn!(executor = %member.handle.id, %reason, "a registered executor could not join the job");
                    self.refused.insert(member.handle.id.clone());
                }
            }
        }
        joined
    }

    /// A leaver that holds nothing any more: ends its job (collecting its statistics) and lets
    /// it go.
    async fn retire(&mut self, id: &ExecutorId, partitions_moved: usize, bytes_moved: u64) {
        let handle = self.members[id].handle.clone();
        let mut client = handle.control.clone();
        let request = v1::EndJobRequest { job_id: self.job_id.clone() };
        let stats =
            self.guarded(&handle, async move { client.end_job(request).await.map(|r| r.into_inner()).map_err(|s| classify(&s)) }).await;
        if let Some(member) = self.members.get_mut(id) {
            member.status = MemberStatus::Left;
            member.stats = stats.ok();
        }
        self.registry.remove(id);
        self.metrics.run_members(self.active().len());
        info!(executor = %id, partitions = partitions_moved, "executor left the job");
        self.record(MembershipChange::Leave, id, partitions_moved, bytes_moved);
    }

    /// A change of the run's executors, for the report.
    fn record(&mut self, change: MembershipChange, id: &ExecutorId, partitions_moved: usize, bytes_moved: u64) {
        let at_seconds = self.started.elapsed().as_secs_f64();
        let step = self.step_count();
        self.membership.push(MembershipEvent { change, executor_id: id.0.clone(), at_seconds, step, partitions_moved, bytes_moved });
    }

    /// Ships each partition to its new owner (each executor's in turn, executors at once),
    /// then releases it from the old owner. An executor lost on the way is declared lost and
    /// its partitions stay orphaned for the next round of `sync`. Returns, per executor, the
    /// partitions and bytes moved in and out.
    #[allow(clippy::type_complexity)]
    async fn move_partitions(
        &mut self,
        moves: Vec<(PartitionId, ExecutorId)>,
    ) -> Result<(BTreeMap<ExecutorId, (usize, u64)>, BTreeMap<ExecutorId, (usize, u64)>)> {
        let mut moved_in: BTreeMap<ExecutorId, (usize, u64)> = BTreeMap::new();
        let mut moved_out: BTreeMap<ExecutorId, (usize, u64)> = BTreeMap::new();
        if moves.is_empty() {
            return Ok((moved_in, moved_out));
        }
        let stale: Vec<(ExecutorId, PartitionId)> =
            moves.iter().filter(|(p, to)| self.unreleased.contains(&(to.clone(), *p))).map(|(p, to)| (to.clone(), *p)).collect();
        self.release(stale).await;
        let mut by_target: BTreeMap<ExecutorId, Vec<PartitionId>> = BTreeMap::new();
        for (p, to) in moves {
            by_target.entry(to).or_default().push(p);
        }
        self.metrics.tasks_moved(by_target.values().map(|v| v.len() as i64).sum(), 0);
        let this: &Dispatcher = self;
        let sends = by_target.iter().map(|(to, parts)| {
            let member = &this.members[to];
            // An executor that has not seen the whole split log catches up first, so the
            // partitions it receives replay every decision.
            let catch_up = (member.log_len < this.log.len()).then(|| v1::ApplySplitsRequest {
                job_id: this.job_id.clone(),
                first_index: member.log_len as u64,
                decisions: this.log[member.log_len..].iter().map(v1::SplitDecision::from).collect(),
                partitions: partitions_to_wire(&this.held_by(to, Role::Train)),
            });
            let load = match &this.prepared.partitions {
                Partitions::Shipped { train, test } => Load::Ship(
                    parts
                        .iter()
                        .map(|p| {
                            let batches = if p.role == Role::Train { train } else { test };
                            (*p, batches[p.index as usize].clone())
                        })
                        .collect(),
                ),
                Partitions::Read(_) => Load::Read(v1::LoadPartitionsRequest {
                    job_id: this.job_id.clone(),
                    partitions: partitions_to_wire(parts),
                    rows: parts.iter().map(|p| this.rows_of(*p)).collect(),
                }),
            };
            let (handle, job_id, metrics) = (member.handle.clone(), this.job_id.clone(), this.metrics.clone());
            async move {
                let mut acked = Vec::new();
                let mut control = handle.control.clone();
                let work = async {
                    if let Some(request) = catch_up {
                        control.apply_splits(request).await.map_err(|s| classify(&s))?;
                    }
                    match load {
                        Load::Ship(batches) => {
                            for (p, batch) in batches {
                                metrics.tasks_moved(-1, 1);
                                let sent = put_partition(handle.channel.clone(), &job_id, p, batch).await;
                                metrics.tasks_moved(0, -1);
                                acked.push((p, sent?));
                            }
                        }
                        Load::Read(request) => {
                            // The executor reads them all, or holds none of them.
                            let n = request.partitions.len() as i64;
                            metrics.tasks_moved(-n, n);
                            let loaded = control.load_partitions(request).await;
                            metrics.tasks_moved(0, -n);
                            loaded.map_err(|s| classify(&s))?;
                            acked.extend(parts.iter().map(|p| (*p, 0)));
                        }
                    }
                    Ok(())
                };
                let outcome = this.guarded(&handle, work).await;
                (acked, outcome)
            }
        });
        let results = futures::future::join_all(sends).await;
        self.metrics.pending_cleared();
        let log_len = self.log.len();
        let mut releases: Vec<(ExecutorId, PartitionId)> = Vec::new();
        for ((to, _), (acked, outcome)) in by_target.iter().zip(results) {
            let bytes: u64 = acked.iter().map(|(_, b)| b).sum();
            self.count_sent(bytes, 0);
            for (p, b) in acked {
                let entry = moved_in.entry(to.clone()).or_default();
                *entry = (entry.0 + 1, entry.1 + b);
                if let Some(from) = self.owner.insert(p, to.clone()) {
                    let entry = moved_out.entry(from.clone()).or_default();
                    *entry = (entry.0 + 1, entry.1 + b);
                    if self.members.get(&from).is_some_and(|m| m.status == MemberStatus::Active) {
                        releases.push((from, p));
                    }
                }
            }
            match outcome {
                Ok(()) => {
                    if let Some(member) = self.members.get_mut(to) {
                        member.log_len = log_len;
                    }
                }
                Err(CallError::Lost(reason)) => self.lose(to, "move partitions", reason),
                Err(CallError::Fatal(reason)) => {
                    return Err(DriverError::TaskFailed { executor: to.0.clone(), reason });
                }
            }
        }
        self.release(releases).await;
        Ok((moved_in, moved_out))
    }

    /// Tells old owners to drop partitions that moved. A failure costs their memory for now;
    /// the copy is remembered and released again before the partition could move back.
    async fn release(&mut self, releases: Vec<(ExecutorId, PartitionId)>) {
        let this: &Dispatcher = self;
        let calls = releases.into_iter().map(|(from, p)| {
            let handle = this.members[&from].handle.clone();
            let request = v1::ReleasePartitionRequest { job_id: this.job_id.clone(), partition: Some(p.into()) };
            async move {
                let mut client = handle.control.clone();
                let done = this.guarded(&handle, async move { client.release_partition(request).await.map_err(|s| classify(&s)) }).await;
                if let Err(CallError::Lost(e) | CallError::Fatal(e)) = &done {
                    warn!(executor = %from, partition = %p, error = %e, "could not release a moved partition");
                }
                (from, p, done.is_ok())
            }
        });
        for (from, p, released) in futures::future::join_all(calls).await {
            if released {
                self.unreleased.remove(&(from, p));
            } else {
                self.unreleased.insert((from, p));
            }
        }
    }

    /// One step: after the step boundary, asks every owner of `role` partitions for its
    /// partitions' answer; partitions of an executor lost on the way move, and only they are
    /// asked again. Returns each answer with the executor that gave it.
    pub(crate) async fn step<T, F, Fut>(&mut self, during: &'static str, role: Role, call: F) -> Result<Vec<(ExecutorId, T)>>
    where
        F: Fn(Target) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>>,
    {
        self.sync().await?;
        let mut uncovered: BTreeSet<PartitionId> = self.partitions(role).into_iter().collect();
        let mut answers = Vec::new();
        loop {
            let mut groups: BTreeMap<ExecutorId, Vec<PartitionId>> = BTreeMap::new();
            for p in &uncovered {
                if let Some(owner) = self.owner.get(p) {
                    groups.entry(owner.clone()).or_default().push(*p);
                }
            }
            if groups.is_empty() {
                return Err(DriverError::Internal(format!("{} partitions have no executor after the step boundary", uncovered.len())));
            }
            let now = Instant::now();
            for id in groups.keys() {
                if let Some(member) = self.members.get_mut(id) {
                    // Registered before the run: counted from the run's start.
                    let since = member.registered_at.max(self.started);
                    member.registration_to_first_task.get_or_insert_with(|| now.duration_since(since).as_secs_f64());
                }
            }
            self.metrics.tasks_moved(0, groups.len() as i64);
            let calls = groups.iter().map(|(id, parts)| {
                let member = &self.members[id];
                let target = Target { client: member.handle.control.clone(), partitions: parts.clone(), log_len: member.log_len };
                let fut = call(target);
                self.guarded(&member.handle, async move { fut.await.map_err(|s| classify(&s)) })
            });
            let results = futures::future::join_all(calls).await;
            self.metrics.tasks_moved(0, -(groups.len() as i64));
            for ((id, parts), result) in groups.into_iter().zip(results) {
                match result {
                    Ok(answer) => {
                        parts.iter().for_each(|p| {
                            uncovered.remove(p);
                        });
                        answers.push((id, answer));
                    }
                    Err(CallError::Lost(reason)) => self.lose(&id, during, reason),
                    Err(CallError::Fatal(reason)) => {
                        return Err(DriverError::TaskFailed { executor: id.0, reason });
                    }
                }
            }
            if uncovered.is_empty() {
                return Ok(answers);
            }
            self.retries += 1;
            self.metrics.tasks_retried.inc();
            self.sync().await?;
        }
    }

    pub async fn histograms(&mut self, nodes: &[NodeId], layout: &HistogramLayout) -> Result<Vec<NodeHistogram>> {
        let job_id = self.job_id.clone();
        let wire_nodes: Vec<u32> = nodes.iter().map(|n| n.0).collect();
        let waited = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let answers = self
            .step("histograms", Role::Train, |t| {
                let request = v1::BuildHistogramsRequest {
                    job_id: job_id.clone(),
                    nodes: wire_nodes.clone(),
                    partitions: partitions_to_wire(&t.partitions),
                };
                counter.fetch_add(request.encoded_len() as u64, Ordering::Relaxed);
                let mut client = t.client;
                async move { client.build_histograms(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        let wait_seconds = waited.elapsed().as_secs_f64();
        self.traffic.histogram_wait_seconds += wait_seconds;
        let bytes_sent = sent.load(Ordering::Relaxed);
        self.count_sent(0, bytes_sent);
        let merging = Instant::now();
        let mut merged = vec![NodeHistogram::zeros(layout); nodes.len()];
        let mut bytes_received = 0;
        let executors = answers.len();
        for (id, answer) in answers {
            bytes_received += answer.encoded_len() as u64;
            if answer.histograms.len() != nodes.len() {
                return Err(DriverError::TaskFailed {
                    executor: id.0,
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
        if first_index != self.log.len() {
            return Err(DriverError::Internal(format!("split log position {first_index}, but {} decisions are logged", self.log.len())));
        }
        self.log.extend_from_slice(decisions);
        let log: Arc<Vec<v1::SplitDecision>> = Arc::new(self.log.iter().map(v1::SplitDecision::from).collect());
        let job_id = self.job_id.clone();
        let waited = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let answers = self
            .step("apply splits", Role::Train, |t| {
                let request = v1::ApplySplitsRequest {
                    job_id: job_id.clone(),
                    first_index: t.log_len as u64,
                    decisions: log.get(t.log_len..).unwrap_or_default().to_vec(),
                    partitions: partitions_to_wire(&t.partitions),
                };
                counter.fetch_add(request.encoded_len() as u64, Ordering::Relaxed);
                let mut client = t.client;
                async move { client.apply_splits(request).await.map(|_| ()) }
            })
            .await?;
        let log_len = self.log.len();
        for (id, ()) in &answers {
            if let Some(member) = self.members.get_mut(id) {
                member.log_len = log_len;
            }
        }
        let wait_seconds = waited.elapsed().as_secs_f64();
        self.traffic.split_wait_seconds += wait_seconds;
        let bytes_sent = sent.load(Ordering::Relaxed);
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

    /// Sums the confusion matrices of a step's answers.
    pub(crate) fn merge_confusion(&mut self, answers: Vec<(ExecutorId, v1::EvaluateResponse)>) -> Result<ConfusionMatrix> {
        let k = self.prepared.num_classes();
        let mut cm = ConfusionMatrix::new(k);
        for (id, answer) in answers {
            self.count_received(answer.encoded_len() as u64);
            if answer.confusion.len() != k * k {
                return Err(DriverError::TaskFailed {
                    executor: id.0,
                    reason: format!("confusion matrix has {} cells, expected {}", answer.confusion.len(), k * k),
                });
            }
            cm.merge(&ConfusionMatrix { num_classes: k, counts: answer.confusion });
        }
        Ok(cm)
    }

    /// Scores the test partitions with a tree or a forest, sent whole in each request.
    pub async fn evaluate(&mut self, model: Model<'_>) -> Result<ConfusionMatrix> {
        let template = match model {
            Model::Tree(tree) => {
                v1::EvaluateRequest { job_id: self.job_id.clone(), nodes: tree_to_wire(tree, false), ..Default::default() }
            }
            Model::Forest(forest) => {
                v1::EvaluateRequest { job_id: self.job_id.clone(), forest: forest_to_wire(forest), ..Default::default() }
            }
        };
        // Executors refuse requests above MAX_REQUEST_BYTES; say so here, with the model's size.
        let partitions_room = 2 * canopy_proto::MAX_PARTITIONS * 8;
        if template.encoded_len() + partitions_room > MAX_REQUEST_BYTES {
            return Err(DriverError::Config(format!(
                "the model takes {} bytes on the wire, more than an evaluation request may carry ({MAX_REQUEST_BYTES}); \
                 train fewer or shallower trees",
                template.encoded_len()
            )));
        }
        let answers = self
            .step("evaluate", Role::Test, |t| {
                let request = v1::EvaluateRequest { partitions: partitions_to_wire(&t.partitions), ..template.clone() };
                let mut client = t.client;
                async move { client.evaluate(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.merge_confusion(answers)
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Ends the job on every active executor and returns everyone's share of the run, in join
    /// order.
    pub async fn end(&mut self) -> Vec<ExecutorReport> {
        let request = v1::EndJobRequest { job_id: self.job_id.clone() };
        let active = self.active();
        let this: &Dispatcher = self;
        let calls = active.iter().map(|id| {
            let handle = this.members[id].handle.clone();
            let mut client = handle.control.clone();
            let request = request.clone();
            async move {
                this.guarded(&handle, async move { client.end_job(request).await.map(|r| r.into_inner()).map_err(|s| classify(&s)) }).await
            }
        });
        let ended = futures::future::join_all(calls).await;
        for (id, stats) in active.iter().zip(ended) {
            if let Some(member) = self.members.get_mut(id) {
                member.stats = stats.ok();
            }
        }
        self.join_order.iter().map(|id| self.report_of(id)).collect()
    }

    fn report_of(&self, id: &ExecutorId) -> ExecutorReport {
        let m = &self.members[id];
        let s = m.stats.clone().unwrap_or_default();
        ExecutorReport {
            executor_id: id.0.clone(),
            addr: m.handle.addr.clone(),
            metrics_addr: m.handle.metrics_addr.clone(),
            pid: m.handle.pid,
            alive_at_end: m.status == MemberStatus::Active,
            left: m.status == MemberStatus::Left,
            joined_at_seconds: m.joined_at_seconds,
            registration_to_first_task_seconds: m.registration_to_first_task,
            tasks: s.tasks,
            busy_seconds: s.busy.into_iter().map(|p| (p.phase, p.seconds)).collect(),
            bytes_received: s.bytes_received,
            bytes_sent: s.bytes_sent,
            peak_heap_bytes: s.peak_heap_bytes,
            peak_rss_bytes: s.peak_rss_bytes,
            rows_held: s.rows_held,
        }
    }
}

impl Drop for Dispatcher {
    /// Whatever way the run ends, its executors are free again; a run that failed also ends
    /// the job it left on them (best effort), so they can take the next one.
    fn drop(&mut self) {
        let request = v1::EndJobRequest { job_id: self.job_id.clone() };
        for member in self.members.values() {
            self.registry.set_busy(&member.handle.id, false);
            // A decommissioning executor whose job ended with the run leaves the pool now.
            if self.registry.get(&member.handle.id).is_some_and(|m| m.leaving) {
                self.registry.remove(&member.handle.id);
            }
            if member.status == MemberStatus::Active && member.stats.is_none() {
                let mut client = member.handle.control.clone();
                let request = request.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), client.end_job(request)).await;
                    });
                }
            }
        }
        self.metrics.run_members(0);
    }
}

/// New owners for `rows` (partition -> rows) among `executors`: partitions keep owners that
/// are in `current`; the others go, largest first, to the least loaded executor; then
/// partitions move from the most to the least loaded executor while that narrows the gap.
/// Deterministic: ties go to the earlier executor in `executors` and the lower partition id.
pub fn balance(
    rows: &BTreeMap<PartitionId, u64>,
    current: &BTreeMap<PartitionId, ExecutorId>,
    executors: &[ExecutorId],
) -> BTreeMap<PartitionId, ExecutorId> {
    let mut owner: BTreeMap<PartitionId, usize> = BTreeMap::new();
    let mut load = vec![0u64; executors.len()];
    if executors.is_empty() {
        return BTreeMap::new();
    }
    for (p, r) in rows {
        if let Some(i) = current.get(p).and_then(|o| executors.iter().position(|e| e == o)) {
            owner.insert(*p, i);
            load[i] += r;
        }
    }
    let mut unowned: Vec<(PartitionId, u64)> = rows.iter().filter(|(p, _)| !owner.contains_key(p)).map(|(p, r)| (*p, *r)).collect();
    unowned.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let least = |load: &[u64]| (0..load.len()).min_by_key(|&i| (load[i], i)).unwrap_or(0);
    for (p, r) in unowned {
        let i = least(&load);
        owner.insert(p, i);
        load[i] += r;
    }
    loop {
        let (most, fewest) = ((0..load.len()).max_by_key(|&i| (load[i], std::cmp::Reverse(i))).unwrap_or(0), least(&load));
        // The largest partition of the most loaded executor that narrows the gap.
        let candidate = owner
            .iter()
            .filter(|(_, o)| **o == most)
            .map(|(p, _)| (*p, rows[p]))
            .filter(|(_, r)| load[fewest] + r < load[most])
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((p, r)) = candidate else { break };
        owner.insert(p, fewest);
        load[most] -= r;
        load[fewest] += r;
    }
    owner.into_iter().map(|(p, i)| (p, executors[i].clone())).collect()
}

/// Sends one partition with Arrow Flight DoPut, in chunks under the message limit.
async fn put_partition(channel: AuthChannel, job_id: &str, p: PartitionId, batch: RecordBatch) -> std::result::Result<u64, CallError> {
    let descriptor = v1::PartitionDescriptor { job_id: job_id.to_string(), partition: Some(p.into()), rows: batch.num_rows() as u64 };
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
        return Err(CallError::Fatal(format!("partition {p} was not acknowledged")));
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

    /// Asks for as many nodes at a time as an executor's answer may hold.
    fn histograms(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeHistogram>> {
        let layout = self.layout.clone();
        let per_request = canopy_proto::histogram_nodes_per_request(layout.bytes_per_node());
        let mut out = Vec::with_capacity(nodes.len());
        for chunk in nodes.chunks(per_request) {
            out.extend(self.handle.block_on(self.dispatcher.histograms(chunk, &layout))?);
        }
        Ok(out)
    }

    fn apply_splits(&mut self, first_index: usize, decisions: &[SplitDecision]) -> Result<()> {
        self.handle.block_on(self.dispatcher.apply_splits(first_index, decisions))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<ExecutorId> {
        (1..=n).map(|i| ExecutorId(format!("e{i}"))).collect()
    }

    fn loads(owner: &BTreeMap<PartitionId, ExecutorId>, rows: &BTreeMap<PartitionId, u64>) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (p, o) in owner {
            *out.entry(o.0.clone()).or_default() += rows[p];
        }
        out
    }

    #[test]
    fn partitions_spread_evenly_and_move_as_little_as_needed() {
        let rows: BTreeMap<PartitionId, u64> = (0..12).map(|i| (PartitionId::train(i), 100 + u64::from(i % 3))).collect();
        let one = balance(&rows, &BTreeMap::new(), &ids(1));
        assert!(one.values().all(|o| o.0 == "e1"));
        // Two executors join the one that holds everything: each takes a third, nothing else moves.
        let three = balance(&rows, &one, &ids(3));
        let moved = three.iter().filter(|(p, o)| one[*p] != **o).count();
        assert_eq!(moved, 8);
        let spread = loads(&three, &rows);
        assert_eq!(spread.len(), 3);
        // Balanced to within one partition: no single move narrows the gap any more.
        assert_eq!(spread, BTreeMap::from([("e1".into(), 400), ("e2".into(), 406), ("e3".into(), 406)]));
        // e2 leaves: only its partitions move, and the rest stays balanced.
        let current: BTreeMap<PartitionId, ExecutorId> = three.iter().filter(|(_, o)| o.0 != "e2").map(|(p, o)| (*p, o.clone())).collect();
        let two = balance(&rows, &current, &[ExecutorId("e1".into()), ExecutorId("e3".into())]);
        assert_eq!(two.iter().filter(|(p, o)| three[*p] != **o).count(), 4);
        let spread = loads(&two, &rows);
        assert!(spread.values().max().unwrap() - spread.values().min().unwrap() < 100, "{spread:?}");
        // Same inputs, same answer.
        assert_eq!(balance(&rows, &one, &ids(3)), three);
    }

    #[test]
    fn more_executors_than_partitions_leaves_some_idle() {
        let rows: BTreeMap<PartitionId, u64> = (0..2).map(|i| (PartitionId::test(i), 10)).collect();
        let owner = balance(&rows, &BTreeMap::new(), &ids(4));
        assert_eq!(owner.values().map(|o| o.0.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);
        assert!(balance(&rows, &BTreeMap::new(), &[]).is_empty());
    }
}

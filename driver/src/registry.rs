//! The executors the driver knows, keyed by executor id: registered through `canopy.v1.Driver`
//! (the `service` module), dialled from `--executor-addrs`, or spawned locally (they register
//! too). Runs take their executors from here, and a running job looks here at every step
//! boundary for executors that joined or are leaving.
//!
//! The lock is never held across an await, and nothing in it can panic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use canopy_proto::ExecutorId;
use tokio::sync::watch;
use tracing::info;

use crate::cluster::ExecutorHandle;
use crate::metrics::DriverMetrics;

/// What the registry holds about one executor.
#[derive(Clone)]
pub struct Member {
    pub handle: ExecutorHandle,
    pub registered_at: Instant,
    /// Registration order: runs take the first n.
    pub seq: u64,
    pub cores: u32,
    pub memory_bytes: u64,
    /// Decommissioning: its partitions move away at the next step boundary.
    pub leaving: bool,
    /// Working for the run in progress.
    pub busy: bool,
}

#[derive(Default)]
struct State {
    members: BTreeMap<ExecutorId, Member>,
    next_seq: u64,
}

#[derive(Clone)]
pub struct Registry {
    state: Arc<Mutex<State>>,
    /// Bumped on every change, so waiters wake up.
    changed: Arc<watch::Sender<u64>>,
    metrics: DriverMetrics,
}

impl Registry {
    pub fn new(metrics: DriverMetrics) -> Self {
        Registry { state: Arc::new(Mutex::new(State::default())), changed: Arc::new(watch::channel(0).0), metrics }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics under this lock; recover the data rather than propagate a poison.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self, state: &State) {
        self.metrics.registry_size(state.members.len());
        self.changed.send_modify(|n| *n += 1);
    }

    /// Adds an executor; `Err` with the member already registered under that id.
    pub fn admit(&self, handle: ExecutorHandle, cores: u32, memory_bytes: u64) -> Result<(), Box<Member>> {
        let mut state = self.lock();
        if let Some(existing) = state.members.get(&handle.id) {
            return Err(Box::new(existing.clone()));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        info!(executor = %handle.id, addr = %handle.addr, cores, "executor registered");
        let id = handle.id.clone();
        state.members.insert(id, Member { handle, registered_at: Instant::now(), seq, cores, memory_bytes, leaving: false, busy: false });
        self.changed(&state);
        Ok(())
    }

    /// An executor is leaving. One that works for a run stays until the run has moved its
    /// partitions away; an idle one leaves at once. False when it is not registered.
    pub fn mark_leaving(&self, id: &ExecutorId) -> bool {
        let mut state = self.lock();
        let Some(member) = state.members.get_mut(id) else {
            return false;
        };
        if member.leaving {
            return true;
        }
        info!(executor = %id, busy = member.busy, "executor decommissioning");
        if member.busy {
            member.leaving = true;
        } else {
            state.members.remove(id);
        }
        self.changed(&state);
        true
    }

    /// Marks an executor as working for the run in progress, or not.
    pub fn set_busy(&self, id: &ExecutorId, busy: bool) {
        if let Some(member) = self.lock().members.get_mut(id) {
            member.busy = busy;
        }
    }

    pub fn remove(&self, id: &ExecutorId) -> Option<Member> {
        let mut state = self.lock();
        let removed = state.members.remove(id);
        if removed.is_some() {
            self.changed(&state);
        }
        removed
    }

    pub fn get(&self, id: &ExecutorId) -> Option<Member> {
        self.lock().members.get(id).cloned()
    }

    /// Every member, in registration order.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self.lock().members.values().cloned().collect();
        members.sort_by_key(|m| m.seq);
        members
    }

    /// Members that can take work (not leaving, not declared dead), in registration order.
    pub fn available(&self) -> Vec<Member> {
        self.members().into_iter().filter(|m| !m.leaving && !m.handle.is_dead()).collect()
    }

    /// Waits until `n` executors are available; on timeout, returns how many there were.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Member>, usize> {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let available = self.available();
            if available.len() >= n {
                return Ok(available);
            }
            // Heartbeats may declare a member dead without a registry change: look again soon.
            let tick = tokio::time::Instant::now() + Duration::from_millis(250);
            if tokio::time::timeout_at(deadline.min(tick), changes.changed()).await.is_err() && tokio::time::Instant::now() >= deadline {
                return Err(available.len());
            }
        }
    }
}

//! `canopy.v1.Driver`, served with `--listen ADDR`: executors register here, send heartbeats,
//! and announce their decommission. A registration is checked before it is admitted: the
//! protocol version, the uniqueness of the id, and that the driver reaches the executor at the
//! address it advertises (by shaking hands with it there).

use std::net::SocketAddr;
use std::time::Duration;

use canopy_proto::v1;
use canopy_proto::v1::driver_server::{Driver, DriverServer};
use canopy_proto::{ExecutorId, MAX_REQUEST_BYTES, PROTOCOL_VERSION};
use canopy_runtime::security::Security;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::cluster;
use crate::error::{DriverError, Result};
use crate::registry::Registry;

/// Longest executor id accepted (it appears in logs, reports and metric labels).
const MAX_ID_LEN: usize = 128;

#[derive(Clone)]
pub struct DriverService {
    registry: Registry,
    /// Our own address, named in refusals.
    addr: SocketAddr,
    /// Also how we dial a registering executor back.
    security: Security,
    connect_timeout: Duration,
    heartbeat_interval: Duration,
}

/// The served endpoint; the server stops when this is dropped.
pub struct DriverEndpoint {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DriverEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` and serves registrations into `registry`, authenticated as `security` says.
pub async fn start(
    listen: SocketAddr,
    registry: Registry,
    security: &Security,
    connect_timeout: Duration,
    heartbeat_interval: Duration,
) -> Result<DriverEndpoint> {
    let listener =
        TcpListener::bind(listen).await.map_err(|e| DriverError::Config(format!("cannot listen for executors on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| DriverError::Internal(e.to_string()))?;
    let incoming = security.incoming(listener).map_err(|e| DriverError::Config(e.to_string()))?;
    let require_token = tonic::service::InterceptorLayer::new(security.require_token());
    let service = DriverService { registry, addr, security: security.clone(), connect_timeout, heartbeat_interval };
    let server = DriverServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let task = tokio::spawn(async move {
        if let Err(e) = Security::server().layer(require_token).add_service(server).serve_with_incoming(incoming).await {
            warn!(error = %e, "driver registration service stopped");
        }
    });
    info!(%addr, "driver listening for executors");
    Ok(DriverEndpoint { addr, task })
}

impl DriverService {
    fn heartbeat_interval_ms(&self) -> u32 {
        u32::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u32::MAX)
    }

    fn refuse(&self, id: &str, advertised: &str, reason: String) -> Status {
        let message = format!("driver at {} refuses executor '{id}' at {advertised}: {reason}", self.addr);
        warn!("{message}");
        Status::failed_precondition(message)
    }
}

#[tonic::async_trait]
impl Driver for DriverService {
    async fn register_executor(
        &self,
        request: Request<v1::RegisterExecutorRequest>,
    ) -> std::result::Result<Response<v1::RegisterExecutorResponse>, Status> {
        let r = request.into_inner();
        let (id, advertised) = (r.executor_id.as_str(), r.advertise_addr.as_str());
        if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control()) {
            return Err(Status::invalid_argument(format!("executor id must be 1 to {MAX_ID_LEN} printable characters")));
        }
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(self.refuse(
                id,
                advertised,
                format!("it speaks canopy.v1 protocol {}, this driver speaks {PROTOCOL_VERSION}", r.protocol_version),
            ));
        }
        if let Some(existing) = self.registry.get(&ExecutorId(id.to_string())) {
            // The same name again. The same process (its reply to an earlier registration was
            // lost) is registered already; a restarted one replaces the dead one; another live
            // executor keeps the name.
            let answering = cluster::connect(&existing.handle.addr, self.connect_timeout, &self.security).await.ok().map(|h| h.incarnation);
            if answering == Some(existing.handle.incarnation) && existing.handle.addr == advertised {
                return Ok(Response::new(v1::RegisterExecutorResponse { heartbeat_interval_ms: self.heartbeat_interval_ms() }));
            }
            if answering == Some(existing.handle.incarnation) {
                return Err(self.refuse(
                    id,
                    advertised,
                    format!(
                        "an executor with this id is registered already at {} (pid {}); ids must be unique",
                        existing.handle.addr, existing.handle.pid
                    ),
                ));
            }
            warn!(executor = %id, old = %existing.handle.addr, "a registered executor of this id does not answer any more; replacing it");
            existing.handle.declare_dead();
            self.registry.remove(&existing.handle.id);
        }
        let handle = cluster::connect(advertised, self.connect_timeout, &self.security).await.map_err(|e| {
            self.refuse(
                id,
                advertised,
                format!("the driver cannot reach it at its advertised address ({e}); set --advertise to an address the driver can reach"),
            )
        })?;
        if handle.id.0 != id {
            return Err(self.refuse(id, advertised, format!("the executor answering at that address is '{}'", handle.id)));
        }
        if let Err(existing) = self.registry.admit(handle, r.cores, r.memory_bytes) {
            return Err(self.refuse(id, advertised, format!("an executor with this id registered meanwhile at {}", existing.handle.addr)));
        }
        Ok(Response::new(v1::RegisterExecutorResponse { heartbeat_interval_ms: self.heartbeat_interval_ms() }))
    }

    async fn executor_heartbeat(
        &self,
        request: Request<v1::ExecutorHeartbeatRequest>,
    ) -> std::result::Result<Response<v1::ExecutorHeartbeatResponse>, Status> {
        let known = self.registry.get(&ExecutorId(request.into_inner().executor_id)).is_some();
        Ok(Response::new(v1::ExecutorHeartbeatResponse { known }))
    }

    async fn decommission(
        &self,
        request: Request<v1::DecommissionRequest>,
    ) -> std::result::Result<Response<v1::DecommissionResponse>, Status> {
        let id = ExecutorId(request.into_inner().executor_id);
        if !self.registry.mark_leaving(&id) {
            return Err(Status::not_found(format!("executor '{id}' is not registered with the driver at {}", self.addr)));
        }
        Ok(Response::new(v1::DecommissionResponse {}))
    }
}

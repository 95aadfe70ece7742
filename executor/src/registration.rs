//! The executor's side of `canopy.v1.Driver`: it registers with a driver (retrying with backoff
//! until the driver is up, as on Kubernetes either may start first), keeps sending heartbeats,
//! registers again if the driver forgets it, and says when it is leaving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use canopy_proto::v1::driver_client::DriverClient;
use canopy_proto::v1::{DecommissionRequest, ExecutorHeartbeatRequest, RegisterExecutorRequest};
use canopy_proto::{MAX_REQUEST_BYTES, PROTOCOL_VERSION};
use canopy_runtime::security::{AuthChannel, Security};
use thiserror::Error;
use tracing::{info, warn};

/// Longest pause between two registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// Deadline of one call to the driver: longer than the driver's own checks of a registration
/// (it dials us back, up to twice, within its connect timeout of 10 s each by default).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of connecting to the driver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum RegistrationError {
    #[error("the driver at {driver} refused executor '{executor}': {reason}")]
    Refused { driver: String, executor: String, reason: String },
    #[error("no driver answered at {driver} within {waited_seconds} s (last attempt: {last_error})")]
    NoDriver { driver: String, waited_seconds: f64, last_error: String },
}

/// Who we are and where the driver is.
#[derive(Debug, Clone)]
pub struct DriverLink {
    pub driver: String,
    pub executor_id: String,
    /// Where the driver reaches us; `None` means "the local address of our route to the driver,
    /// with the port we listen on".
    pub advertise: Option<String>,
    pub listen: SocketAddr,
    pub cores: u32,
    pub memory_bytes: u64,
    /// How we prove who we are to the driver (and check it is the driver).
    pub security: Security,
}

enum Attempt {
    Registered(Duration),
    Refused(String),
    Failed(String),
}

impl DriverLink {
    async fn client(&self) -> Result<DriverClient<AuthChannel>, String> {
        let endpoint = self.security.endpoint(&self.driver)?.connect_timeout(CONNECT_TIMEOUT).timeout(CALL_TIMEOUT).tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| canopy_runtime::error_chain(&e))?;
        Ok(DriverClient::new(self.security.authorize(channel)).max_decoding_message_size(MAX_REQUEST_BYTES))
    }

    /// The address we advertise: explicit, or our listen address, or (when we listen on all
    /// interfaces) the local address the kernel picks for reaching the driver.
    async fn advertise_addr(&self) -> Result<String, String> {
        if let Some(addr) = &self.advertise {
            return Ok(addr.clone());
        }
        if !self.listen.ip().is_unspecified() {
            return Ok(self.listen.to_string());
        }
        let driver = tokio::net::lookup_host(&self.driver)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.driver))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.driver))?;
        let any: SocketAddr = if driver.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let probe = tokio::net::UdpSocket::bind(any).await.map_err(|e| e.to_string())?;
        probe.connect(driver).await.map_err(|e| format!("no route to {driver}: {e}"))?;
        let local = probe.local_addr().map_err(|e| e.to_string())?;
        Ok(SocketAddr::new(local.ip(), self.listen.port()).to_string())
    }

    async fn attempt(&self) -> Attempt {
        let advertise_addr = match self.advertise_addr().await {
            Ok(addr) => addr,
            Err(e) => return Attempt::Failed(e),
        };
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(e) => return Attempt::Failed(e),
        };
        let request = RegisterExecutorRequest {
            executor_id: self.executor_id.clone(),
            advertise_addr,
            protocol_version: PROTOCOL_VERSION,
            cores: self.cores,
            memory_bytes: self.memory_bytes,
        };
        match client.register_executor(request).await {
            Ok(reply) => Attempt::Registered(Duration::from_millis(u64::from(reply.into_inner().heartbeat_interval_ms.max(100)))),
            Err(status)
                if matches!(status.code(), tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument | tonic::Code::AlreadyExists) =>
            {
                Attempt::Refused(status.message().to_string())
            }
            Err(status) => Attempt::Failed(format!("{}: {}", status.code(), status.message())),
        }
    }

    /// Registers, retrying with backoff; gives up after `wait` (never, with `None`). A refusal
    /// (protocol, duplicate id, unreachable advertised address) is final. Returns the heartbeat
    /// interval the driver asked for.
    pub async fn register(&self, wait: Option<Duration>) -> Result<Duration, RegistrationError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match self.attempt().await {
                Attempt::Registered(interval) => {
                    info!(driver = %self.driver, attempt, "registered with the driver");
                    return Ok(interval);
                }
                Attempt::Refused(reason) => {
                    return Err(RegistrationError::Refused { driver: self.driver.clone(), executor: self.executor_id.clone(), reason });
                }
                Attempt::Failed(last_error) => {
                    if wait.is_some_and(|w| started.elapsed() + backoff > w) {
                        return Err(RegistrationError::NoDriver {
                            driver: self.driver.clone(),
                            waited_seconds: started.elapsed().as_secs_f64().round(),
                            last_error,
                        });
                    }
                    info!(driver = %self.driver, attempt, error = %last_error, retry_in_ms = backoff.as_millis() as u64, "driver not reachable yet");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sends heartbeats forever. When a driver answers that it does not know us (it was
    /// restarted at the same address, or declared us lost), `on_new_driver` runs (a job of a
    /// driver that forgot us will never end) and we register again. A driver that does not
    /// answer is only logged: it may be busy, and a new one answers "unknown" when it is up.
    pub async fn keep_registered(self, mut interval: Duration, on_new_driver: impl Fn() + Send) {
        let mut unreachable = false;
        // One connection for the heartbeats, made again after a failure.
        let mut connection: Option<DriverClient<AuthChannel>> = None;
        loop {
            tokio::time::sleep(interval).await;
            let beat = async {
                let client = match &mut connection {
                    Some(client) => client,
                    None => connection.insert(self.client().await?),
                };
                let request = ExecutorHeartbeatRequest { executor_id: self.executor_id.clone() };
                client.executor_heartbeat(request).await.map(|r| r.into_inner().known).map_err(|s| s.message().to_string())
            };
            let answer = beat.await;
            if answer.is_err() {
                connection = None;
            }
            match answer {
                Ok(true) => unreachable = false,
                Ok(false) => {
                    warn!(driver = %self.driver, "the driver does not know this executor; registering again");
                    on_new_driver();
                    loop {
                        match self.register(None).await {
                            Ok(new_interval) => break interval = new_interval,
                            Err(e) => {
                                warn!(error = %e, "registration refused; retrying");
                                tokio::time::sleep(MAX_BACKOFF).await;
                            }
                        }
                    }
                    unreachable = false;
                }
                Err(e) if !unreachable => {
                    warn!(driver = %self.driver, error = %e, "heartbeat to the driver failed; retrying");
                    unreachable = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Tells the driver we are leaving; it moves our partitions away and ends our job.
    pub async fn decommission(&self) -> Result<(), String> {
        let mut client = self.client().await?;
        client
            .decommission(DecommissionRequest { executor_id: self.executor_id.clone() })
            .await
            .map(|_| ())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }
}

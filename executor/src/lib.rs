//! The Canopy executor: holds binned partitions of one job at a time and answers the driver's
//! tasks; registers with a driver (`registration`) and leaves gracefully on SIGTERM.
//!
//! `serve` takes an already bound listener so tests (and the driver's local spawner) can use
//! port 0 and learn the address.

pub mod ensemble;
mod error;
pub mod metrics;
pub mod registration;
pub mod server;
pub mod store;
pub mod validate;

use std::future::Future;

use arrow_flight::flight_service_server::FlightServiceServer;
use canopy_proto::v1::executor_server::ExecutorServer;
use canopy_proto::{MAX_FLIGHT_MESSAGE_BYTES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES};
use canopy_runtime::security::Security;
pub use error::ExecutorError;
pub use metrics::ExecutorMetrics;
use server::PartitionReceiver;
pub use server::{ExecutorService, FaultInjection};
use tokio::net::TcpListener;

/// Serves the executor and Flight services of `service` on `listener` until `shutdown`
/// completes, every call authenticated as `security` says (TLS, token, both or neither).
pub async fn serve(
    listener: TcpListener,
    service: ExecutorService,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let control =
        ExecutorServer::new(service.clone()).max_decoding_message_size(MAX_REQUEST_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let flight = FlightServiceServer::new(PartitionReceiver::new(service))
        .max_decoding_message_size(MAX_FLIGHT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES);
    let incoming = security.incoming(listener)?;
    Security::server()
        .layer(tonic::service::InterceptorLayer::new(security.require_token()))
        .add_service(control)
        .add_service(flight)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

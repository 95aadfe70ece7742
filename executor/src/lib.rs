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

use std::future::Future;

use arrow_flight::flight_service_server::FlightServiceServer;
use canopy_proto::MAX_MESSAGE_BYTES;
use canopy_proto::v1::executor_server::ExecutorServer;
pub use error::ExecutorError;
pub use metrics::ExecutorMetrics;
use server::PartitionReceiver;
pub use server::{ExecutorService, FaultInjection};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Serves the executor and Flight services of `service` on `listener` until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    service: ExecutorService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let control =
        ExecutorServer::new(service.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let flight = FlightServiceServer::new(PartitionReceiver::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(control)
        .add_service(flight)
        // Without nodelay every small answer waits ~40 ms for a delayed ACK.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
}

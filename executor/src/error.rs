//! Executor errors and their one mapping to gRPC status codes.

use thiserror::Error;
use tonic::Status;

#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("protocol version mismatch: this executor speaks canopy.v1 protocol {executor}, the driver speaks {driver}")]
    ProtocolMismatch { executor: u32, driver: u32 },
    #[error("no job is running on this executor (call BeginJob first)")]
    NoJob,
    #[error("request is for job '{requested}' but this executor runs job '{current}'")]
    WrongJob { requested: String, current: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("partition data: {0}")]
    PartitionData(String),
    #[error(transparent)]
    Tree(#[from] canopy_tree::TreeError),
    #[error(transparent)]
    Wire(#[from] canopy_proto::WireError),
    #[error("local model: {0}")]
    LocalModel(String),
    #[error("task panicked or was cancelled: {0}")]
    TaskAborted(String),
}

impl From<ExecutorError> for Status {
    fn from(e: ExecutorError) -> Status {
        let message = e.to_string();
        match e {
            ExecutorError::ProtocolMismatch { .. } | ExecutorError::NoJob | ExecutorError::WrongJob { .. } => {
                Status::failed_precondition(message)
            }
            ExecutorError::InvalidRequest(_) | ExecutorError::PartitionData(_) | ExecutorError::Wire(_) => {
                Status::invalid_argument(message)
            }
            ExecutorError::Tree(_) | ExecutorError::LocalModel(_) => Status::invalid_argument(message),
            ExecutorError::TaskAborted(_) => Status::internal(message),
        }
    }
}

//! Executor errors and their one mapping to gRPC status codes.

use thiserror::Error;
use tonic::Status;

#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("protocol version mismatch: this executor speaks canopy.v1 protocol {executor}, the driver speaks {driver}")]
    ProtocolMismatch { executor: u32, driver: u32 },
    #[error("no job is running on this executor (call BeginJob first)")]
    NoJob,
    // The running job's id is not named: it is what a caller would need to act on that job.
    #[error("request is for job '{requested}', which is not the job this executor runs")]
    WrongJob { requested: String },
    #[error("this executor runs another job; it takes one job at a time (EndJob first)")]
    Busy,
    #[error("this executor is decommissioning and takes no new job")]
    Decommissioning,
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
    #[error("over the memory budget: {0}")]
    OverBudget(String),
    #[error("task panicked or was cancelled: {0}")]
    TaskAborted(String),
    /// The job's data source cannot be read, or its rows are not what the driver found.
    #[error(transparent)]
    Data(#[from] canopy_pipeline::DataError),
}

impl From<ExecutorError> for Status {
    fn from(e: ExecutorError) -> Status {
        use canopy_tree::TreeError;
        let message = e.to_string();
        match e {
            ExecutorError::ProtocolMismatch { .. }
            | ExecutorError::NoJob
            | ExecutorError::WrongJob { .. }
            | ExecutorError::Busy
            | ExecutorError::Decommissioning
            | ExecutorError::Tree(
                TreeError::PartitionNotHeld { .. } | TreeError::DuplicatePartition { .. } | TreeError::SplitLogGap { .. },
            ) => Status::failed_precondition(message),
            ExecutorError::InvalidRequest(_) | ExecutorError::PartitionData(_) | ExecutorError::Wire(_) => {
                Status::invalid_argument(message)
            }
            ExecutorError::Tree(_) | ExecutorError::LocalModel(_) => Status::invalid_argument(message),
            ExecutorError::OverBudget(_) => Status::resource_exhausted(message),
            ExecutorError::TaskAborted(_) => Status::internal(message),
            // Another executor would read the same file: the job fails with the reason.
            ExecutorError::Data(_) => Status::invalid_argument(message),
        }
    }
}

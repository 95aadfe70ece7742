//! The driver's one error type. Every variant names what was wrong and where.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DriverError {
    #[error("cannot read '{path}': {reason}")]
    UnreadableFile { path: PathBuf, reason: String },
    #[error("label column '{column}' of '{path}' is null in every row")]
    AllLabelsNull { path: PathBuf, column: String },
    #[error("'{path}' has no rows left {stage}")]
    EmptyDataset { path: PathBuf, stage: &'static str },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot read experiment file '{path}': {reason}")]
    ExperimentFile { path: PathBuf, reason: String },
    #[error("invalid training parameters: {0}")]
    Params(canopy_tree::TreeError),
    #[error("training failed: {0}")]
    Tree(#[from] canopy_tree::TreeError),
    #[error("query failed on '{path}': {reason}")]
    Query { path: PathBuf, reason: String },
    #[error("cannot start executor '{binary}': {reason}")]
    ExecutorSpawn { binary: PathBuf, reason: String },
    #[error("cannot reach executor at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("executor at {addr} refused the connection: {reason}")]
    Refused { addr: String, reason: String },
    #[error("executor {executor} failed a task it cannot retry: {reason}")]
    TaskFailed { executor: String, reason: String },
    #[error("no executor left: all {count} failed (last: {last_failure})")]
    NoExecutorsLeft { count: usize, last_failure: String },
    #[error(
        "{needed} executors needed but {registered} registered within {waited_seconds} s; executors register with `canopy-executor --driver HOST:PORT`, this driver listens on {listen}"
    )]
    NotEnoughExecutors { needed: usize, registered: usize, waited_seconds: f64, listen: String },
    #[error("cannot write '{path}': {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("model file '{path}' is invalid: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Data(#[from] canopy_pipeline::DataError),
}

pub type Result<T, E = DriverError> = std::result::Result<T, E>;

pub use canopy_pipeline::with_causes;

//! The driver's one error type. Every variant names what was wrong and where.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DriverError {
    #[error("cannot read '{path}': {reason}")]
    UnreadableFile { path: PathBuf, reason: String },
    #[error("'{path}' has an unknown extension; expected .parquet, .csv, .json, .jsonl or .ndjson (optionally followed by .gz or .bz2)")]
    UnknownExtension { path: PathBuf },
    #[error("'{path}' has no column '{column}' (needed as {role}); its columns are: {available}")]
    MissingColumn { path: PathBuf, column: String, role: &'static str, available: String },
    #[error("column '{column}' of '{path}' has type {found}, expected {expected}")]
    WrongColumnType { path: PathBuf, column: String, expected: &'static str, found: String },
    #[error("column '{column}' of '{path}' has a non-numeric value '{value}' at row {row}; expected a number")]
    NonNumericValue { path: PathBuf, column: String, row: u64, value: String },
    #[error("column '{column}' of '{path}' cannot be read at row {row}: {detail}")]
    UnparsableValue { path: PathBuf, column: String, row: u64, detail: String },
    #[error("column '{column}' of '{path}' is null at row {row}; features must not be null")]
    NullFeature { path: PathBuf, column: String, row: u64 },
    #[error("column '{column}' of '{path}' has a non-finite value {value} at row {row}")]
    NonFiniteValue { path: PathBuf, column: String, row: u64, value: f64 },
    #[error("label column '{column}' of '{path}' is null in every row")]
    AllLabelsNull { path: PathBuf, column: String },
    #[error("label column '{column}' of '{path}' has {found} distinct classes; at most {max} are supported")]
    TooManyClasses { path: PathBuf, column: String, found: usize, max: usize },
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
}

pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// `text` followed by the causes of `e` that it does not already say: HTTP clients' top-level
/// errors ("error sending request") hide the reason (connection refused, timeout) in them.
pub fn with_causes(mut text: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

//! Errors of reading and featurizing input. Every variant names the file (path or URL), and the
//! column and row where there is one.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
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
    #[error("label column '{column}' of '{path}' has {found} distinct classes; at most {max} are supported")]
    TooManyClasses { path: PathBuf, column: String, found: usize, max: usize },
    #[error("query failed on '{path}': {reason}")]
    Query { path: PathBuf, reason: String },
    #[error("model file '{path}' is invalid: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    /// Bin edges that cannot be made (the same message as the driver's training errors).
    #[error("training failed: {0}")]
    Tree(#[from] canopy_tree::TreeError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

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

//! Arrow record batches of a partition -> the binned rows a job holds (and raw rows in ensemble
//! mode). Feature columns are UInt8 bins when the driver binned them (exact mode) or Float64
//! values (ensemble mode, or a driver that leaves binning to executors); "label" is UInt8.
//! The in-process learner decodes its partitions with the same function.

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, UInt8Array};
use arrow::datatypes::DataType;
use canopy_tree::{BinEdges, BinnedPartition};

use crate::ExecutorError;
use crate::store::RawRows;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ExecutorError> {
    let col = batch.column_by_name(name).ok_or_else(|| ExecutorError::PartitionData(format!("column '{name}' is missing")))?;
    if col.null_count() > 0 {
        return Err(ExecutorError::PartitionData(format!("column '{name}' has {} nulls", col.null_count())));
    }
    Ok(col)
}

fn typed<'a, T: 'static>(col: &'a ArrayRef, name: &str, expected: &str) -> Result<&'a T, ExecutorError> {
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| ExecutorError::PartitionData(format!("column '{name}' must be {expected}, got {}", col.data_type())))
}

/// Decodes one partition's batches; `keep_raw` also returns row-major raw values.
pub fn decode_partition(
    batches: &[RecordBatch],
    edges: &BinEdges,
    num_classes: usize,
    keep_raw: bool,
) -> Result<(BinnedPartition, Option<RawRows>), ExecutorError> {
    let names: Vec<&str> = edges.features.iter().map(|f| f.name.as_str()).collect();
    let mut labels = Vec::new();
    for batch in batches {
        labels.extend_from_slice(typed::<UInt8Array>(column(batch, "label")?, "label", "UInt8")?.values());
    }
    let prebinned = match (batches.first(), names.first()) {
        (Some(batch), Some(name)) => *column(batch, name)?.data_type() == DataType::UInt8,
        _ => false,
    };
    if prebinned {
        if keep_raw {
            return Err(ExecutorError::PartitionData("ensemble mode needs Float64 feature values, got UInt8 bins".into()));
        }
        let mut columns: Vec<Vec<u8>> = vec![Vec::with_capacity(labels.len()); names.len()];
        for batch in batches {
            for (all, name) in columns.iter_mut().zip(&names) {
                all.extend_from_slice(typed::<UInt8Array>(column(batch, name)?, name, "UInt8 bins")?.values());
            }
        }
        let refs: Vec<&[u8]> = columns.iter().map(Vec::as_slice).collect();
        return Ok((BinnedPartition::from_bin_columns(&refs, &labels, edges, num_classes)?, None));
    }
    let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(labels.len()); names.len()];
    for batch in batches {
        for (all, name) in columns.iter_mut().zip(&names) {
            all.extend_from_slice(typed::<Float64Array>(column(batch, name)?, name, "Float64")?.values());
        }
    }
    let raw = keep_raw
        .then(|| RawRows { values: (0..labels.len()).flat_map(|r| columns.iter().map(move |c| c[r])).collect(), labels: labels.clone() });
    let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    Ok((BinnedPartition::from_columns(&refs, labels, edges, num_classes)?, raw))
}

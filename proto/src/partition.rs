//! The partition format: how a partition's rows travel from the driver to an executor as Arrow
//! record batches (Arrow Flight DoPut), and how both sides read them back. One column per
//! feature, named as in the job's bin edges: UInt8 bins (exact mode: the driver binned them) or
//! Float64 values (ensemble mode, whose linfa trees need raw values); then the UInt8 "label";
//! then, for a forest's training partitions, the UInt64 "row": each row's number in the input.
//! The in-process learner decodes its partitions with the same function as the executors.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, UInt8Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use canopy_tree::{BinEdges, BinnedPartition, TreeError};
use thiserror::Error;

/// Most columns of a partition: the features, the label and the row number.
const MAX_COLUMNS: usize = crate::MAX_FEATURES + 2;

/// The label column's name.
pub const LABEL: &str = "label";
/// The row-number column's name (forest mode: row numbers seed the bootstrap weights).
pub const ROW: &str = "row";

#[derive(Debug, Error, PartialEq)]
pub enum PartitionFormatError {
    #[error("column '{column}' is missing")]
    MissingColumn { column: String },
    #[error("column '{column}' has {nulls} nulls")]
    Nulls { column: String, nulls: usize },
    #[error("column '{column}' must be {expected}, got {found}")]
    WrongType { column: String, expected: &'static str, found: String },
    #[error("feature columns mix UInt8 bins and Float64 values")]
    MixedEncodings,
    #[error("ensemble mode needs Float64 feature values, got UInt8 bins")]
    BinsWithoutValues,
    #[error("{0}")]
    Rows(#[from] TreeError),
    #[error("cannot build the record batch: {0}")]
    Arrow(String),
    #[error("malformed Arrow IPC message: {0}")]
    Ipc(String),
}

/// Checks one Arrow IPC message (a Flight message's header) against its body before arrow-ipc
/// reads it: the reader trusts the header's buffer offsets, row and null counts, and panics on
/// a buffer past the body's end or a null count without its bitmap (found by executor/tests/fuzz.rs).
pub fn check_ipc_message(header: &[u8], body_len: usize) -> Result<(), PartitionFormatError> {
    if header.is_empty() {
        return Ok(());
    }
    let bad = |reason: String| Err(PartitionFormatError::Ipc(reason));
    let message = match arrow::ipc::root_as_message(header) {
        Ok(m) => m,
        Err(e) => return bad(format!("the header is not an IPC message ({e})")),
    };
    if let Some(schema) = message.header_as_schema() {
        // Only the format's types, little-endian: the reader panics on some types it does not
        // support, and on a schema without its field list.
        let fields = schema.fields().filter(|f| !f.is_empty() && f.len() <= MAX_COLUMNS);
        let Some(fields) = fields.filter(|_| schema.endianness() == arrow::ipc::Endianness::Little) else {
            return bad(format!("a schema needs 1 to {MAX_COLUMNS} little-endian columns"));
        };
        for field in fields {
            let supported = field.type_as_int().is_some_and(|t| matches!(t.bitWidth(), 8 | 64) && !t.is_signed())
                || field.type_as_floating_point().is_some_and(|t| t.precision() == arrow::ipc::Precision::DOUBLE);
            if !supported || field.dictionary().is_some() || field.children().is_some_and(|c| !c.is_empty()) {
                return bad(format!("column '{}' is not UInt8, UInt64 or Float64", field.name().unwrap_or_default()));
            }
        }
        return Ok(());
    }
    let Some(batch) = message.header_as_record_batch() else {
        return bad("only schema and record batch messages are accepted".into());
    };
    if batch.compression().is_some() {
        return bad("compressed bodies are not accepted".into());
    }
    if usize::try_from(message.bodyLength()).ok() != Some(body_len) {
        return bad(format!("the header declares a {}-byte body, the message has {body_len} bytes", message.bodyLength()));
    }
    for (i, buffer) in batch.buffers().into_iter().flatten().enumerate() {
        let end = u64::try_from(buffer.offset()).ok().zip(u64::try_from(buffer.length()).ok()).and_then(|(o, l)| o.checked_add(l));
        if end.is_none_or(|end| end > body_len as u64) {
            return bad(format!("buffer {i} at {}+{} lies outside the {body_len}-byte body", buffer.offset(), buffer.length()));
        }
    }
    let rows = batch.length();
    for node in batch.nodes().into_iter().flatten() {
        // Partitions have no nulls; a null count would make the reader trust a validity bitmap.
        if rows < 0 || node.length() != rows || node.null_count() != 0 {
            return bad(format!("a column declares {} values ({} null) in a batch of {rows} rows", node.length(), node.null_count()));
        }
    }
    Ok(())
}

/// Feature values of rows, one vector per feature.
pub enum FeatureColumns {
    /// Bins, one byte a value (exact mode).
    Binned(Vec<Vec<u8>>),
    /// Raw values (ensemble mode).
    Raw(Vec<Vec<f64>>),
}

impl FeatureColumns {
    fn is_binned(&self) -> bool {
        matches!(self, FeatureColumns::Binned(_))
    }
}

/// The schema of partitions: UInt8 bins or Float64 values per feature, the UInt8 label, and
/// with `row_numbers` the UInt64 row number.
pub fn schema(feature_names: &[String], binned: bool, row_numbers: bool) -> SchemaRef {
    let feature_type = if binned { DataType::UInt8 } else { DataType::Float64 };
    let mut fields: Vec<Field> = feature_names.iter().map(|n| Field::new(n, feature_type.clone(), false)).collect();
    fields.push(Field::new(LABEL, DataType::UInt8, false));
    if row_numbers {
        fields.push(Field::new(ROW, DataType::UInt64, false));
    }
    Arc::new(Schema::new(fields))
}

/// One partition's batch from its columns, labels and, for forest training, row numbers; the
/// vectors become the batch's buffers without a copy.
pub fn encode(
    feature_names: &[String],
    columns: FeatureColumns,
    labels: Vec<u8>,
    row_numbers: Option<Vec<u64>>,
) -> Result<RecordBatch, PartitionFormatError> {
    let binned = columns.is_binned();
    let mut arrays: Vec<ArrayRef> = match columns {
        FeatureColumns::Binned(cols) => cols.into_iter().map(|c| Arc::new(UInt8Array::from(c)) as ArrayRef).collect(),
        FeatureColumns::Raw(cols) => cols.into_iter().map(|c| Arc::new(Float64Array::from(c)) as ArrayRef).collect(),
    };
    arrays.push(Arc::new(UInt8Array::from(labels)));
    let with_numbers = row_numbers.is_some();
    if let Some(numbers) = row_numbers {
        arrays.push(Arc::new(UInt64Array::from(numbers)));
    }
    RecordBatch::try_new(schema(feature_names, binned, with_numbers), arrays).map_err(|e| PartitionFormatError::Arrow(e.to_string()))
}

/// Raw feature values of a partition, kept only in ensemble mode (linfa fits on raw values).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRows {
    /// Row-major, one value per feature per row.
    pub values: Vec<f64>,
    pub labels: Vec<u8>,
}

/// A decoded partition: its binned rows, and its raw values when asked for.
pub struct Decoded {
    pub binned: BinnedPartition,
    pub raw: Option<RawRows>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, PartitionFormatError> {
    let col = batch.column_by_name(name).ok_or_else(|| PartitionFormatError::MissingColumn { column: name.to_string() })?;
    if col.null_count() > 0 {
        return Err(PartitionFormatError::Nulls { column: name.to_string(), nulls: col.null_count() });
    }
    Ok(col)
}

fn typed<'a, T: 'static>(col: &'a ArrayRef, name: &str, expected: &'static str) -> Result<&'a T, PartitionFormatError> {
    col.as_any().downcast_ref::<T>().ok_or_else(|| PartitionFormatError::WrongType {
        column: name.to_string(),
        expected,
        found: col.data_type().to_string(),
    })
}

/// Decodes one partition's batches against the job's edges; `keep_raw` also returns row-major
/// raw values (ensemble mode). Every bin and label is checked; row numbers are kept when the
/// batches carry them.
pub fn decode(batches: &[RecordBatch], edges: &BinEdges, num_classes: usize, keep_raw: bool) -> Result<Decoded, PartitionFormatError> {
    let mut decoded = decode_rows(batches, edges, num_classes, keep_raw)?;
    if batches.first().is_some_and(|b| b.column_by_name(ROW).is_some()) {
        let mut numbers = Vec::with_capacity(decoded.binned.num_rows());
        for batch in batches {
            numbers.extend_from_slice(typed::<UInt64Array>(column(batch, ROW)?, ROW, "UInt64")?.values());
        }
        decoded.binned = decoded.binned.with_row_numbers(numbers)?;
    }
    Ok(decoded)
}

fn decode_rows(batches: &[RecordBatch], edges: &BinEdges, num_classes: usize, keep_raw: bool) -> Result<Decoded, PartitionFormatError> {
    let names: Vec<&str> = edges.features.iter().map(|f| f.name.as_str()).collect();
    let mut labels = Vec::new();
    for batch in batches {
        labels.extend_from_slice(typed::<UInt8Array>(column(batch, LABEL)?, LABEL, "UInt8")?.values());
    }
    let prebinned = match (batches.first(), names.first()) {
        (Some(batch), Some(name)) => *column(batch, name)?.data_type() == DataType::UInt8,
        _ => false,
    };
    if prebinned {
        if keep_raw {
            return Err(PartitionFormatError::BinsWithoutValues);
        }
        let mut columns: Vec<Vec<u8>> = vec![Vec::with_capacity(labels.len()); names.len()];
        for batch in batches {
            for (all, name) in columns.iter_mut().zip(&names) {
                all.extend_from_slice(typed::<UInt8Array>(column(batch, name)?, name, "UInt8 bins")?.values());
            }
        }
        let refs: Vec<&[u8]> = columns.iter().map(Vec::as_slice).collect();
        return Ok(Decoded { binned: BinnedPartition::from_bin_columns(&refs, &labels, edges, num_classes)?, raw: None });
    }
    let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(labels.len()); names.len()];
    for batch in batches {
        for (all, name) in columns.iter_mut().zip(&names) {
            let values = match column(batch, name)?.data_type() {
                DataType::UInt8 => return Err(PartitionFormatError::MixedEncodings),
                _ => typed::<Float64Array>(column(batch, name)?, name, "Float64")?.values(),
            };
            all.extend_from_slice(values);
        }
    }
    let raw = keep_raw
        .then(|| RawRows { values: (0..labels.len()).flat_map(|r| columns.iter().map(move |c| c[r])).collect(), labels: labels.clone() });
    let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    Ok(Decoded { binned: BinnedPartition::from_columns(&refs, labels, edges, num_classes)?, raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_tree::FeatureBins;

    fn edges() -> BinEdges {
        BinEdges { features: vec![FeatureBins { name: "x".into(), thresholds: vec![0.5, 1.5] }] }
    }

    #[test]
    fn binned_and_raw_partitions_round_trip() {
        let names = vec!["x".to_string()];
        let raw = encode(&names, FeatureColumns::Raw(vec![vec![1.0, 2.0]]), vec![1, 1], None).expect("encodes");
        let decoded = decode(&[raw], &edges(), 2, true).expect("decodes");
        assert_eq!(decoded.raw, Some(RawRows { values: vec![1.0, 2.0], labels: vec![1, 1] }));
        let binned = encode(&names, FeatureColumns::Binned(vec![vec![2, 0, 1]]), vec![1, 0, 1], None).expect("encodes");
        assert_eq!(decode(std::slice::from_ref(&binned), &edges(), 2, false).expect("decodes").binned.num_rows(), 3);
        assert_eq!(decode(&[binned], &edges(), 2, true).err(), Some(PartitionFormatError::BinsWithoutValues));
    }

    #[test]
    fn row_numbers_travel_with_forest_partitions() {
        let names = vec!["x".to_string()];
        let columns = || FeatureColumns::Binned(vec![vec![1, 2]]);
        let batch = encode(&names, columns(), vec![1, 1], Some(vec![30, 10])).expect("encodes");
        assert_eq!(batch.schema().field(2).name(), ROW);
        let plan = canopy_tree::ForestParams { num_trees: 2, ..Default::default() }.plan(1, 1).expect("valid");
        let mut stats = canopy_tree::LocalStats::for_plan(canopy_tree::HistogramLayout::new(&edges(), 2), &plan);
        let decoded = decode(&[batch], &edges(), 2, false).expect("decodes");
        assert_eq!(stats.insert(canopy_tree::PartitionId::train(0), decoded.binned), Ok(()), "row numbers arrived");
        let without = encode(&names, columns(), vec![1, 1], None).expect("encodes");
        let decoded = decode(&[without], &edges(), 2, false).expect("decodes");
        let refused = stats.insert(canopy_tree::PartitionId::train(1), decoded.binned);
        assert_eq!(refused, Err(TreeError::MissingRowNumbers));
    }

    #[test]
    fn wrong_batches_are_named() {
        let other = vec!["y".to_string()];
        let batch = encode(&other, FeatureColumns::Binned(vec![vec![0]]), vec![0], None).expect("encodes");
        assert_eq!(decode(&[batch], &edges(), 2, false).err(), Some(PartitionFormatError::MissingColumn { column: "x".into() }));
        let names = vec!["x".to_string()];
        let batch = encode(&names, FeatureColumns::Binned(vec![vec![3]]), vec![0], None).expect("encodes");
        assert!(matches!(decode(&[batch], &edges(), 2, false), Err(PartitionFormatError::Rows(TreeError::BinOutOfRange { bin: 3, .. }))));
    }
}

//! From a file to feature columns: DataFusion reads the file and computes the derived columns
//! (SQL expressions), then each row is checked, labelled and its categories indexed.
//!
//! Row numbers in errors count data rows from 1 in file order (a CSV header is not a row).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::{cast, filter_record_batch, is_not_null};
use arrow::datatypes::{DataType, Int32Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::load::{SOURCE_TABLE, register_source, scan_error, session};
use crate::config::{FeatureSpec, LabelSpec};
use crate::error::{DriverError, Result};

/// Most classes a label may have (labels travel as one byte).
pub const MAX_CLASSES: usize = 255;

/// Columns of the rows that have a label (or all rows, when no label is needed).
pub struct Loaded {
    pub path: PathBuf,
    /// Column "__label" (if present), then numeric columns as Float64, then categorical as Utf8.
    pub batches: Vec<RecordBatch>,
    /// File row number (1-based) of every kept row, in order.
    pub row_numbers: Vec<u64>,
    pub rows_read: u64,
    pub has_label: bool,
}

impl Loaded {
    pub fn rows(&self) -> usize {
        self.row_numbers.len()
    }
}

pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const LABEL: &str = "__label";

fn query_error(path: &Path) -> impl Fn(datafusion::error::DataFusionError) -> DriverError + '_ {
    move |e| DriverError::Query { path: path.to_path_buf(), reason: e.to_string() }
}

/// Reads `path`, computes derived columns, drops rows whose label is null and checks every
/// kept value. With `label_required = false` (scoring) the label is read only if present.
pub async fn load(path: &Path, spec: &FeatureSpec, label_required: bool) -> Result<Loaded> {
    let ctx = session();
    register_source(&ctx, path).await?;
    let schema = ctx.table(SOURCE_TABLE).await.map_err(query_error(path))?.schema().as_arrow().clone();
    let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let derived: HashMap<&str, &str> = spec.derived.iter().map(|d| (d.name.as_str(), d.sql.as_str())).collect();
    let missing = |column: &str, role: &'static str| DriverError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        role,
        available: available.join(", "),
    };
    // The expression of a column (derived by SQL or read as is), without its alias.
    let expr = |column: &str, role: &'static str| -> Result<String> {
        match derived.get(column) {
            Some(sql) => Ok(format!("({sql})")),
            None if available.contains(&column) => Ok(quote(column)),
            None => Err(missing(column, role)),
        }
    };
    let has_label = derived.contains_key(spec.label.column.as_str()) || available.contains(&spec.label.column.as_str());
    if label_required && !has_label {
        return Err(missing(&spec.label.column, "the label"));
    }
    let mut select = Vec::new();
    if has_label {
        select.push(format!("{} AS {LABEL}", expr(&spec.label.column, "the label")?));
    }
    for column in &spec.numeric {
        select.push(format!("{} AS {}", expr(column, "a numeric feature")?, quote(column)));
    }
    for column in &spec.categorical {
        select.push(format!("{} AS {}", expr(column, "a categorical feature")?, quote(column)));
    }
    let sql = format!("SELECT {} FROM {SOURCE_TABLE}", select.join(", "));
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let batches = ctx.sql(&sql).await.map_err(query_error(path))?.collect().await.map_err(|e| scan_error(path, &columns, e))?;

    let mut out = Vec::with_capacity(batches.len());
    let mut row_numbers = Vec::new();
    let mut first_row = 1u64;
    let mut labels_seen = 0u64;
    for batch in batches {
        let rows = batch.num_rows() as u64;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        let mut offset = 0;
        if has_label {
            let label = batch.column(0).clone();
            let label = if spec.label.buckets.is_empty() {
                cast(&label, &DataType::Utf8).map_err(|e| DriverError::Internal(e.to_string()))?
            } else {
                to_f64(path, &spec.label.column, &label, first_row)?
            };
            labels_seen += (label.len() - label.null_count()) as u64;
            columns.push(label);
            offset = 1;
        }
        for (i, column) in spec.numeric.iter().enumerate() {
            columns.push(to_f64(path, column, batch.column(offset + i), first_row)?);
        }
        offset += spec.numeric.len();
        for (i, _) in spec.categorical.iter().enumerate() {
            columns.push(cast(batch.column(offset + i), &DataType::Utf8).map_err(|e| DriverError::Internal(e.to_string()))?);
        }
        let fields: Vec<arrow::datatypes::Field> = columns
            .iter()
            .zip(batch.schema().fields())
            .map(|(c, f)| arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        let typed = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
            .map_err(|e| DriverError::Internal(e.to_string()))?;
        let kept = if has_label {
            let mask = is_not_null(typed.column(0)).map_err(|e| DriverError::Internal(e.to_string()))?;
            row_numbers.extend(mask.iter().enumerate().filter(|(_, k)| *k == Some(true)).map(|(i, _)| first_row + i as u64));
            filter_record_batch(&typed, &mask).map_err(|e| DriverError::Internal(e.to_string()))?
        } else {
            row_numbers.extend(first_row..first_row + rows);
            typed
        };
        first_row += rows;
        out.push(kept);
    }
    let rows_read = first_row - 1;
    if rows_read == 0 {
        return Err(DriverError::EmptyDataset { path: path.to_path_buf(), stage: "(the file has no data rows)" });
    }
    if has_label && labels_seen == 0 {
        return Err(DriverError::AllLabelsNull { path: path.to_path_buf(), column: spec.label.column.clone() });
    }
    let loaded = Loaded { path: path.to_path_buf(), batches: out, row_numbers, rows_read, has_label };
    check_no_nulls(&loaded, spec)?;
    Ok(loaded)
}

/// Casts a numeric (or numeric-looking text) column to Float64, naming the first bad value.
fn to_f64(path: &Path, column: &str, array: &ArrayRef, first_row: u64) -> Result<ArrayRef> {
    let dt = array.data_type();
    let textual = matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !(dt.is_numeric() || textual || *dt == DataType::Boolean || *dt == DataType::Null) {
        return Err(DriverError::WrongColumnType {
            path: path.to_path_buf(),
            column: column.to_string(),
            expected: "a number",
            found: dt.to_string(),
        });
    }
    let cast_err = |e: arrow::error::ArrowError| DriverError::Internal(format!("casting '{column}': {e}"));
    let values = cast(array, &DataType::Float64).map_err(cast_err)?;
    if values.null_count() > array.null_count() {
        let text = cast(array, &DataType::Utf8).map_err(cast_err)?;
        let text = text.as_string::<i32>();
        // Blank text is a missing value (CSV writes nulls that way); anything else is an error.
        if let Some(i) = (0..array.len()).find(|&i| array.is_valid(i) && values.is_null(i) && !text.value(i).trim().is_empty()) {
            return Err(DriverError::NonNumericValue {
                path: path.to_path_buf(),
                column: column.to_string(),
                row: first_row + i as u64,
                value: text.value(i).to_string(),
            });
        }
    }
    Ok(values)
}

/// Features of kept rows must be present and finite.
fn check_no_nulls(loaded: &Loaded, spec: &FeatureSpec) -> Result<()> {
    let names: Vec<&String> = spec.numeric.iter().chain(&spec.categorical).collect();
    let offset = usize::from(loaded.has_label);
    let mut row_base = 0usize;
    for batch in &loaded.batches {
        for (i, name) in names.iter().enumerate() {
            let column = batch.column(offset + i);
            let row_of = |j: usize| loaded.row_numbers[row_base + j];
            if column.null_count() > 0
                && let Some(j) = (0..column.len()).find(|&j| column.is_null(j))
            {
                return Err(DriverError::NullFeature { path: loaded.path.clone(), column: name.to_string(), row: row_of(j) });
            }
            if let Some(values) = column.as_any().downcast_ref::<Float64Array>()
                && let Some((j, &v)) = values.values().iter().enumerate().find(|(_, v)| !v.is_finite())
            {
                return Err(DriverError::NonFiniteValue { path: loaded.path.clone(), column: name.to_string(), row: row_of(j), value: v });
            }
        }
        row_base += batch.num_rows();
    }
    Ok(())
}

/// A session with the loaded rows registered as the table `loaded`, for the encoding's counts.
fn loaded_session(loaded: &Loaded) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let schema = loaded.batches.first().map(|b| b.schema()).ok_or_else(|| DriverError::Internal("no batches".into()))?;
    let table = MemTable::try_new(schema, vec![loaded.batches.clone()]).map_err(query_error(&loaded.path))?;
    ctx.register_table("loaded", Arc::new(table)).map_err(query_error(&loaded.path))?;
    Ok(ctx)
}

/// Values of a loaded column by descending frequency, ties by ascending value (Spark's
/// StringIndexer order), counted by DataFusion.
async fn frequency_index(ctx: &SessionContext, loaded: &Loaded, column_index: usize) -> Result<Vec<String>> {
    let name = loaded.batches[0].schema().field(column_index).name().clone();
    let sql = format!(
        "SELECT {c} AS value, COUNT(*) AS n FROM loaded WHERE {c} IS NOT NULL GROUP BY {c} ORDER BY n DESC, value ASC",
        c = quote(&name)
    );
    let batches = ctx.sql(&sql).await.map_err(query_error(&loaded.path))?.collect().await.map_err(query_error(&loaded.path))?;
    let mut values = Vec::new();
    for batch in batches {
        let text = cast(batch.column(0), &DataType::Utf8).map_err(|e| DriverError::Internal(format!("{name}: {e}")))?;
        let text = text.as_string::<i32>();
        values.extend((0..text.len()).map(|i| text.value(i).to_string()));
    }
    Ok(values)
}

/// The feature matrix (column-major) and labels of the loaded rows.
pub struct Featurized {
    pub columns: Vec<Vec<f64>>,
    pub labels: Option<Vec<u8>>,
}

/// How labels and categories become numbers; saved in the model so scoring does the same.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Encoding {
    pub label: LabelSpec,
    pub class_names: Vec<String>,
    /// Categorical column -> values in index order. Unseen values get index = len (Spark's
    /// StringIndexer with handleInvalid = "keep").
    pub string_indexes: BTreeMap<String, Vec<String>>,
}

impl Encoding {
    /// Learns the encoding from training data: category frequencies and label classes.
    pub async fn fit(loaded: &Loaded, spec: &FeatureSpec) -> Result<Encoding> {
        let offset = usize::from(loaded.has_label);
        let ctx = loaded_session(loaded)?;
        let mut string_indexes = BTreeMap::new();
        for (i, column) in spec.categorical.iter().enumerate() {
            let index = frequency_index(&ctx, loaded, offset + spec.numeric.len() + i).await?;
            string_indexes.insert(column.clone(), index);
        }
        let class_names = if spec.label.buckets.is_empty() {
            let classes = frequency_index(&ctx, loaded, 0).await?;
            if classes.len() > MAX_CLASSES {
                return Err(DriverError::TooManyClasses {
                    path: loaded.path.clone(),
                    column: spec.label.column.clone(),
                    found: classes.len(),
                    max: MAX_CLASSES,
                });
            }
            classes
        } else {
            bucket_names(&spec.label.buckets)
        };
        Ok(Encoding { label: spec.label.clone(), class_names, string_indexes })
    }

    /// Applies the encoding to loaded rows.
    pub fn apply(&self, loaded: &Loaded, spec: &FeatureSpec) -> Result<Featurized> {
        let rows = loaded.rows();
        let offset = usize::from(loaded.has_label);
        let mut columns: Vec<Vec<f64>> = Vec::with_capacity(spec.numeric.len() + spec.categorical.len());
        for i in 0..spec.numeric.len() {
            let mut values = Vec::with_capacity(rows);
            for batch in &loaded.batches {
                values.extend_from_slice(as_f64(batch.column(offset + i))?.values());
            }
            columns.push(values);
        }
        for (i, column) in spec.categorical.iter().enumerate() {
            let index = self.string_indexes.get(column).ok_or_else(|| DriverError::Internal(format!("no index for '{column}'")))?;
            let lookup: HashMap<&str, f64> = index.iter().enumerate().map(|(k, v)| (v.as_str(), k as f64)).collect();
            let unseen = index.len() as f64;
            let mut values = Vec::with_capacity(rows);
            for batch in &loaded.batches {
                // Dictionary-encode the batch (Arrow's vectorised hashing), then look up each
                // distinct value once instead of every row.
                let dictionary = cast(
                    batch.column(offset + spec.numeric.len() + i),
                    &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                )
                .map_err(|e| DriverError::Internal(format!("dictionary of '{column}': {e}")))?;
                let dictionary = dictionary.as_dictionary::<Int32Type>();
                let distinct = dictionary.values().as_string::<i32>();
                let codes: Vec<f64> = (0..distinct.len()).map(|k| lookup.get(distinct.value(k)).copied().unwrap_or(unseen)).collect();
                values.extend(dictionary.keys().iter().map(|key| key.and_then(|k| codes.get(k as usize).copied()).unwrap_or(unseen)));
            }
            columns.push(values);
        }
        let labels = if loaded.has_label { Some(self.labels(loaded)?) } else { None };
        Ok(Featurized { columns, labels })
    }

    fn labels(&self, loaded: &Loaded) -> Result<Vec<u8>> {
        let mut labels = Vec::with_capacity(loaded.rows());
        if self.label.buckets.is_empty() {
            let lookup: HashMap<&str, u8> = self.class_names.iter().enumerate().map(|(k, v)| (v.as_str(), k as u8)).collect();
            let mut row_base = 0;
            for batch in &loaded.batches {
                let text = as_str(batch.column(0))?;
                for (j, value) in text.iter().enumerate() {
                    let value = value.unwrap_or_default();
                    let class = lookup.get(value).copied().ok_or_else(|| DriverError::InvalidModel {
                        path: loaded.path.clone(),
                        reason: format!(
                            "label '{value}' at row {} is not one of the model's classes {:?}",
                            loaded.row_numbers[row_base + j],
                            self.class_names
                        ),
                    })?;
                    labels.push(class);
                }
                row_base += batch.num_rows();
            }
        } else {
            for batch in &loaded.batches {
                labels.extend(as_f64(batch.column(0))?.values().iter().map(|&v| bucket_of(&self.label.buckets, v)));
            }
        }
        Ok(labels)
    }
}

/// Spark's Bucketizer: class i holds [splits[i-1], splits[i]).
pub fn bucket_of(buckets: &[f64], value: f64) -> u8 {
    buckets.partition_point(|&b| b <= value) as u8
}

fn bucket_names(buckets: &[f64]) -> Vec<String> {
    let bounds: Vec<String> = std::iter::once("-inf".to_string())
        .chain(buckets.iter().map(|b| b.to_string()))
        .chain(std::iter::once("inf".to_string()))
        .collect();
    bounds.windows(2).map(|w| format!("[{},{})", w[0], w[1])).collect()
}

fn as_f64(array: &ArrayRef) -> Result<&Float64Array> {
    array.as_any().downcast_ref::<Float64Array>().ok_or_else(|| DriverError::Internal("expected a Float64 column".into()))
}

fn as_str(array: &ArrayRef) -> Result<&StringArray> {
    array.as_any().downcast_ref::<StringArray>().ok_or_else(|| DriverError::Internal("expected a Utf8 column".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_sparks_bucketizer() {
        let b = [-15.0, 0.0, 30.0];
        let classes: Vec<u8> = [-100.0, -15.0, -0.5, 0.0, 29.9, 30.0, 500.0].iter().map(|&v| bucket_of(&b, v)).collect();
        assert_eq!(classes, vec![0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(bucket_names(&b), vec!["[-inf,-15)", "[-15,0)", "[0,30)", "[30,inf)"]);
    }
}

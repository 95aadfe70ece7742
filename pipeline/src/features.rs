//! From a unit of input rows to checked feature columns, and from those to the numbers
//! executors train on.
//!
//! A [`Pipeline`] is compiled once per file: which columns to read, and DataFusion physical
//! expressions for the derived columns. [`Pipeline::featurize`] then turns one unit (a row group
//! or a streamed batch) into [`UnitFeatures`]: rows with a null label dropped, numbers as
//! Float64, categories as dictionary codes, every kept value checked. The [`Encoding`], fitted
//! from the counts of all units, turns those into labels, category indexes and bins.
//!
//! Row numbers in errors count data rows from 1 in file order (a CSV header is not a row).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int32Array, RecordBatch, new_null_array};
use arrow::compute::{cast, filter, is_not_null, take};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use canopy_proto::partition::FeatureColumns;
use canopy_tree::BinEdges;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::{DataError, Result};
use crate::scan::Unit;
use crate::spec::{FeatureSpec, LabelSpec};

/// Most classes a label may have (labels travel as one byte).
pub const MAX_CLASSES: usize = 255;

/// Categories as dictionary codes into their distinct text values.
pub type Categories = DictionaryArray<Int32Type>;

fn category_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The label of kept rows: a number to bucket, or a class name.
pub enum LabelValues {
    Numeric(Float64Array),
    Classes(Categories),
}

/// The checked features of one unit's kept rows.
pub struct UnitFeatures {
    /// Rows the unit had, kept or not.
    pub rows_read: u64,
    /// File row number of every kept row, in order.
    pub row_numbers: Vec<u64>,
    pub label: Option<LabelValues>,
    pub numeric: Vec<Float64Array>,
    pub categorical: Vec<Categories>,
}

/// How one output column is computed from a unit's batch.
enum Source {
    /// The batch's column at this index.
    Read(usize),
    /// A SQL expression over the batch's columns at `inputs`.
    Derived { sql: String, expr: Arc<dyn PhysicalExpr>, inputs: Vec<usize>, volatile: bool },
}

/// The feature pipeline of one file.
pub struct Pipeline {
    path: PathBuf,
    spec: FeatureSpec,
    /// File columns to read, ascending; a unit's batch holds exactly these.
    columns: Vec<usize>,
    /// Their schema as expressions see it: dictionary columns as their values' type.
    value_schema: SchemaRef,
    label: Option<Source>,
    numeric: Vec<Source>,
    categorical: Vec<Source>,
}

impl Pipeline {
    /// Resolves every column of `spec` in `schema` (the file's) and plans the derived ones.
    /// With `label_required = false` (scoring), the label is used only if the file has it.
    pub fn new(path: &Path, schema: &Schema, spec: &FeatureSpec, label_required: bool) -> Result<Pipeline> {
        let query = |e: datafusion::error::DataFusionError| DataError::Query { path: path.to_path_buf(), reason: e.to_string() };
        let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let missing = |column: &str, role: &'static str| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            role,
            available: available.join(", "),
        };
        let file_values = DFSchema::try_from(values_of(schema)).map_err(query)?;
        let ctx = SessionContext::new();
        let derived: HashMap<&str, &str> = spec.derived.iter().map(|d| (d.name.as_str(), d.sql.as_str())).collect();
        // Each needed column as either a file column or a planned-later expression.
        enum Resolved {
            File(usize),
            Expr(String, datafusion::prelude::Expr),
        }
        let resolve = |column: &str, role: &'static str| -> Result<Resolved> {
            if let Some(sql) = derived.get(column) {
                return Ok(Resolved::Expr(sql.to_string(), ctx.parse_sql_expr(sql, &file_values).map_err(query)?));
            }
            available.iter().position(|&c| c == column).map(Resolved::File).ok_or_else(|| missing(column, role))
        };
        let has_label = derived.contains_key(spec.label.column.as_str()) || available.contains(&spec.label.column.as_str());
        if label_required && !has_label {
            return Err(missing(&spec.label.column, "the label"));
        }
        let label = has_label.then(|| resolve(&spec.label.column, "the label")).transpose()?;
        let numeric = spec.numeric.iter().map(|c| resolve(c, "a numeric feature")).collect::<Result<Vec<_>>>()?;
        let categorical = spec.categorical.iter().map(|c| resolve(c, "a categorical feature")).collect::<Result<Vec<_>>>()?;

        let all = label.iter().chain(&numeric).chain(&categorical);
        let mut columns: Vec<usize> = Vec::new();
        for resolved in all {
            match resolved {
                Resolved::File(i) => columns.push(*i),
                Resolved::Expr(_, expr) => {
                    for c in expr.column_refs() {
                        columns.push(file_values.index_of_column(c).map_err(query)?);
                    }
                }
            }
        }
        columns.sort_unstable();
        columns.dedup();
        let value_schema = Arc::new(values_of(&schema.project(&columns).map_err(|e| DataError::Internal(e.to_string()))?));
        let read_values = DFSchema::try_from(value_schema.as_ref().clone()).map_err(query)?;
        let position = |file_index: usize| columns.iter().position(|&c| c == file_index).unwrap_or_default();
        let plan = |resolved: Resolved| -> Result<Source> {
            Ok(match resolved {
                Resolved::File(i) => Source::Read(position(i)),
                Resolved::Expr(sql, expr) => {
                    let inputs =
                        expr.column_refs().iter().map(|c| read_values.index_of_column(c).map_err(query)).collect::<Result<Vec<_>>>()?;
                    let volatile = expr.is_volatile();
                    Source::Derived { sql, expr: ctx.create_physical_expr(expr, &read_values).map_err(query)?, inputs, volatile }
                }
            })
        };
        Ok(Pipeline {
            path: path.to_path_buf(),
            spec: spec.clone(),
            value_schema,
            label: label.map(plan).transpose()?,
            numeric: numeric.into_iter().map(plan).collect::<Result<_>>()?,
            categorical: categorical.into_iter().map(plan).collect::<Result<_>>()?,
            columns,
        })
    }

    /// The file columns a unit must hold, ascending.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    pub fn has_label(&self) -> bool {
        self.label.is_some()
    }

    /// One unit's checked features: rows without a label dropped, numbers as Float64,
    /// categories as codes, nulls and non-finite numbers refused with their row.
    pub fn featurize(&self, unit: Unit) -> Result<UnitFeatures> {
        let Unit { first_row, batch } = unit;
        let rows = batch.num_rows();
        let path = self.path.as_path();
        let mut label = match &self.label {
            Some(source) => {
                let values = self.column(&batch, source)?;
                let column = &self.spec.label.column;
                Some(if self.spec.label.buckets.is_empty() {
                    LabelValues::Classes(to_categories(column, &values)?)
                } else {
                    LabelValues::Numeric(to_f64(path, column, &values, first_row)?)
                })
            }
            None => None,
        };
        let mut numeric = Vec::with_capacity(self.numeric.len());
        for (name, source) in self.spec.numeric.iter().zip(&self.numeric) {
            numeric.push(to_f64(path, name, &self.column(&batch, source)?, first_row)?);
        }
        let mut categorical = Vec::with_capacity(self.categorical.len());
        for (name, source) in self.spec.categorical.iter().zip(&self.categorical) {
            categorical.push(to_categories(name, &self.column(&batch, source)?)?);
        }
        let mut row_numbers: Vec<u64> = (first_row..first_row + rows as u64).collect();
        let labelled = label.as_ref().map(|l| match l {
            LabelValues::Numeric(v) => v.null_count(),
            LabelValues::Classes(v) => v.logical_null_count(),
        });
        if let (Some(nulls), Some(values)) = (labelled, &label)
            && nulls > 0
        {
            let mask = match values {
                LabelValues::Numeric(v) => is_not_null(v),
                LabelValues::Classes(v) => is_not_null(v),
            }
            .map_err(internal)?;
            let keep = |array: &dyn Array| filter(array, &mask).map_err(internal);
            label = Some(match values {
                LabelValues::Numeric(v) => LabelValues::Numeric(keep(v)?.as_primitive().clone()),
                LabelValues::Classes(v) => LabelValues::Classes(keep(v)?.as_dictionary::<Int32Type>().clone()),
            });
            numeric = numeric.iter().map(|c| Ok(keep(c)?.as_primitive().clone())).collect::<Result<_>>()?;
            categorical = categorical.iter().map(|c| Ok(keep(c)?.as_dictionary::<Int32Type>().clone())).collect::<Result<_>>()?;
            row_numbers = row_numbers.iter().zip(mask.values().iter()).filter(|(_, k)| *k).map(|(&r, _)| r).collect();
        }
        let features = UnitFeatures { rows_read: rows as u64, row_numbers, label, numeric, categorical };
        self.check(&features)?;
        Ok(features)
    }

    /// Features of kept rows must be present and finite.
    fn check(&self, features: &UnitFeatures) -> Result<()> {
        let path = || self.path.clone();
        for (name, values) in self.spec.numeric.iter().zip(&features.numeric) {
            if let Some(j) = (values.null_count() > 0).then(|| (0..values.len()).find(|&j| values.is_null(j))).flatten() {
                return Err(DataError::NullFeature { path: path(), column: name.clone(), row: features.row_numbers[j] });
            }
            if let Some((j, &v)) = values.values().iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(DataError::NonFiniteValue { path: path(), column: name.clone(), row: features.row_numbers[j], value: v });
            }
        }
        for (name, values) in self.spec.categorical.iter().zip(&features.categorical) {
            // A dictionary's nulls are its null keys and its keys to null values.
            if let Some(nulls) = values.logical_nulls()
                && let Some(j) = (0..values.len()).find(|&j| nulls.is_null(j))
            {
                return Err(DataError::NullFeature { path: path(), column: name.clone(), row: features.row_numbers[j] });
            }
        }
        Ok(())
    }

    /// The values of one output column for every row of `batch`.
    fn column(&self, batch: &RecordBatch, source: &Source) -> Result<ArrayRef> {
        match source {
            Source::Read(i) => Ok(batch.column(*i).clone()),
            Source::Derived { sql, expr, inputs, volatile } => {
                let failed = |e: &dyn std::fmt::Display| DataError::Query { path: self.path.clone(), reason: format!("{sql}: {e}") };
                let dictionaries: Option<Vec<&Categories>> =
                    inputs.iter().map(|&i| batch.column(i).as_any().downcast_ref::<Categories>()).collect();
                let combinations =
                    dictionaries.filter(|_| !volatile && !inputs.is_empty()).and_then(|d| Some((distinct_combinations(&d)?, d)));
                match combinations {
                    // Every input is a code: evaluate once per distinct combination of codes
                    // (Route from the pairs of Origin and Dest codes), not once per row.
                    Some(((combos, keys), dictionaries)) => {
                        let mut arrays: Vec<ArrayRef> =
                            self.value_schema.fields().iter().map(|f| new_null_array(f.data_type(), combos.len())).collect();
                        for (k, (&i, dictionary)) in inputs.iter().zip(&dictionaries).enumerate() {
                            let codes = Int32Array::from_iter(combos.iter().map(|combo| combo[k]));
                            arrays[i] = take(dictionary.values(), &codes, None).map_err(|e| failed(&e))?;
                        }
                        let distinct = RecordBatch::try_new(self.value_schema.clone(), arrays).map_err(|e| failed(&e))?;
                        let values = expr.evaluate(&distinct).and_then(|v| v.into_array(combos.len())).map_err(|e| failed(&e))?;
                        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).map_err(|e| failed(&e))?))
                    }
                    _ => {
                        let arrays = self
                            .value_schema
                            .fields()
                            .iter()
                            .enumerate()
                            .map(|(i, f)| match inputs.contains(&i) {
                                true => cast(batch.column(i), f.data_type()).map_err(|e| failed(&e)),
                                false => Ok(new_null_array(f.data_type(), batch.num_rows())),
                            })
                            .collect::<Result<Vec<_>>>()?;
                        let plain = RecordBatch::try_new(self.value_schema.clone(), arrays).map_err(|e| failed(&e))?;
                        expr.evaluate(&plain).and_then(|v| v.into_array(plain.num_rows())).map_err(|e| failed(&e))
                    }
                }
            }
        }
    }
}

/// The schema with every dictionary column as its values' type.
fn values_of(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type(value.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new(fields)
}

/// The distinct tuples of codes (None for a null) of the rows, in order of first appearance,
/// and each row's tuple index; None when the tuples do not fit a u64 key. A tuple's key is its
/// codes in mixed radix (a null as the dictionary's length), looked up in a dense table when the
/// radix product is small.
fn distinct_combinations(dictionaries: &[&Categories]) -> Option<(Vec<Vec<Option<i32>>>, Int32Array)> {
    const DENSE: u64 = 1 << 22;
    let rows = dictionaries.first().map_or(0, |d| d.len());
    let radixes: Vec<u64> = dictionaries.iter().map(|d| d.values().len() as u64 + 1).collect();
    let space = radixes.iter().try_fold(1u64, |product, &r| product.checked_mul(r))?;
    let code = |d: &Categories, row: usize| if d.is_valid(row) { d.keys().value(row).max(0) as u64 } else { d.values().len() as u64 };
    let key_of = |row: usize| dictionaries.iter().zip(&radixes).fold(0u64, |key, (d, &radix)| key * radix + code(d, row));
    let mut table = if space <= DENSE { Table::Dense(vec![-1; space as usize]) } else { Table::Sparse(HashMap::default()) };
    let mut combos: Vec<Vec<Option<i32>>> = Vec::new();
    let mut keys = Vec::with_capacity(rows);
    for row in 0..rows {
        let slot = table.slot(key_of(row));
        if *slot < 0 {
            *slot = combos.len() as i32;
            combos.push(dictionaries.iter().map(|d| d.is_valid(row).then(|| d.keys().value(row))).collect());
        }
        keys.push(*slot);
    }
    Some((combos, Int32Array::from(keys)))
}

/// Key -> tuple index (-1 until seen).
enum Table {
    Dense(Vec<i32>),
    Sparse(HashMap<u64, i32, BuildHasherDefault<crate::counts::BitsHasher>>),
}

impl Table {
    fn slot(&mut self, key: u64) -> &mut i32 {
        match self {
            // Keys are below the radix product, the table's length.
            Table::Dense(slots) => &mut slots[key as usize],
            Table::Sparse(slots) => slots.entry(key).or_insert(-1),
        }
    }
}

fn internal(e: arrow::error::ArrowError) -> DataError {
    DataError::Internal(e.to_string())
}

/// A column's values as text categories (codes into distinct values).
fn to_categories(column: &str, array: &ArrayRef) -> Result<Categories> {
    let failed = |e: arrow::error::ArrowError| DataError::Internal(format!("categories of '{column}': {e}"));
    let coded = match array.data_type() {
        DataType::Dictionary(_, _) | DataType::Utf8 => cast(array, &category_type()).map_err(failed)?,
        // Numbers and other text types become their text first, as categories are text.
        _ => cast(&cast(array, &DataType::Utf8).map_err(failed)?, &category_type()).map_err(failed)?,
    };
    Ok(coded.as_dictionary::<Int32Type>().clone())
}

/// Casts a numeric (or numeric-looking text) column to Float64, naming the first bad value.
fn to_f64(path: &Path, column: &str, array: &ArrayRef, first_row: u64) -> Result<Float64Array> {
    let cast_err = |e: arrow::error::ArrowError| DataError::Internal(format!("casting '{column}': {e}"));
    let array = match array.data_type() {
        DataType::Dictionary(_, value) => cast(array, value).map_err(cast_err)?,
        _ => array.clone(),
    };
    let dt = array.data_type();
    let textual = matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !(dt.is_numeric() || textual || *dt == DataType::Boolean || *dt == DataType::Null) {
        return Err(DataError::WrongColumnType {
            path: path.to_path_buf(),
            column: column.to_string(),
            expected: "a number",
            found: dt.to_string(),
        });
    }
    let values = cast(&array, &DataType::Float64).map_err(cast_err)?;
    if values.null_count() > array.null_count() {
        let text = cast(&array, &DataType::Utf8).map_err(cast_err)?;
        let text = text.as_string::<i32>();
        // Blank text is a missing value (CSV writes nulls that way); anything else is an error.
        if let Some(i) = (0..array.len()).find(|&i| array.is_valid(i) && values.is_null(i) && !text.value(i).trim().is_empty()) {
            return Err(DataError::NonNumericValue {
                path: path.to_path_buf(),
                column: column.to_string(),
                row: first_row + i as u64,
                value: text.value(i).to_string(),
            });
        }
    }
    Ok(values.as_primitive().clone())
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

/// What an encoded feature value is: its bin under the global edges, or the value itself.
#[derive(Clone, Copy)]
pub enum Values<'a> {
    Binned(&'a BinEdges),
    Raw,
}

/// Encoded rows bound for one destination (a partition, or all rows when scoring).
pub struct Chunk {
    pub columns: FeatureColumns,
    pub labels: Vec<u8>,
    /// Kept only when asked for (forest training, scoring).
    pub row_numbers: Vec<u64>,
    pub rows: usize,
}

impl Chunk {
    /// An empty chunk with room for `rows` rows (their numbers too when `numbered`).
    pub fn with_capacity(values: Values, features: usize, rows: usize, numbered: bool) -> Chunk {
        let columns = match values {
            Values::Binned(_) => FeatureColumns::Binned(vec![Vec::with_capacity(rows); features]),
            Values::Raw => FeatureColumns::Raw(vec![Vec::with_capacity(rows); features]),
        };
        let row_numbers = Vec::with_capacity(if numbered { rows } else { 0 });
        Chunk { columns, labels: Vec::with_capacity(rows), row_numbers, rows: 0 }
    }

    /// Appends `other`'s rows after this chunk's.
    pub fn append(&mut self, other: Chunk) {
        match (&mut self.columns, other.columns) {
            (FeatureColumns::Binned(a), FeatureColumns::Binned(b)) => a.iter_mut().zip(b).for_each(|(a, b)| a.extend(b)),
            (FeatureColumns::Raw(a), FeatureColumns::Raw(b)) => a.iter_mut().zip(b).for_each(|(a, b)| a.extend(b)),
            // Chunks of one preparation share one kind of values.
            _ => {}
        }
        self.labels.extend(other.labels);
        self.row_numbers.extend(other.row_numbers);
        self.rows += other.rows;
    }
}

impl Encoding {
    /// Encodes one unit's rows (featurized by `pipeline`) into `destinations` chunks;
    /// `destination` gives a row's chunk from its file row number. With `numbered`, chunks keep
    /// their rows' numbers.
    pub fn encode(
        &self,
        pipeline: &Pipeline,
        features: &UnitFeatures,
        values: Values,
        destinations: usize,
        destination: impl Fn(u64) -> usize,
        numbered: bool,
    ) -> Result<Vec<Chunk>> {
        // Each destination's rows, as indexes into the unit's kept rows.
        let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); destinations];
        for (i, &row) in features.row_numbers.iter().enumerate() {
            rows_of[destination(row)].push(i as u32);
        }
        let labels = match &features.label {
            Some(label) => self.labels(&pipeline.path, label, &features.row_numbers)?,
            None => Vec::new(),
        };
        // Each feature's value (or bin) per row. A category's index and bin are found once per
        // distinct value, not once per row.
        let numbers = features.numeric.iter().map(|c| (None, Cow::Borrowed(c.values().as_ref())));
        let mut categories = Vec::with_capacity(features.categorical.len());
        for (column, coded) in pipeline.spec.categorical.iter().zip(&features.categorical) {
            categories.push((Some(coded.keys().values().as_ref()), Cow::Owned(self.indexes(column, coded)?)));
        }
        let columns = numbers.chain(categories);
        let per_row = match values {
            Values::Binned(edges) => FeatureColumns::Binned(
                columns
                    .zip(&edges.features)
                    .map(|((keys, column), bins)| of_rows(keys, column.iter().map(|&v| bins.bin_of(v)).collect()))
                    .collect(),
            ),
            Values::Raw => FeatureColumns::Raw(columns.map(|(keys, column)| of_rows(keys, column.into_owned())).collect()),
        };
        Ok(rows_of
            .iter()
            .map(|rows| Chunk {
                columns: match &per_row {
                    FeatureColumns::Binned(c) => FeatureColumns::Binned(c.iter().map(|c| gather(c, rows)).collect()),
                    FeatureColumns::Raw(c) => FeatureColumns::Raw(c.iter().map(|c| gather(c, rows)).collect()),
                },
                labels: if labels.is_empty() { Vec::new() } else { gather(&labels, rows) },
                row_numbers: if numbered { gather(&features.row_numbers, rows) } else { Vec::new() },
                rows: rows.len(),
            })
            .collect())
    }

    /// The index of each distinct value of a category's dictionary (unseen values get the
    /// index after the last).
    fn indexes(&self, column: &str, categories: &Categories) -> Result<Vec<f64>> {
        let index = self.string_indexes.get(column).ok_or_else(|| DataError::Internal(format!("no index for '{column}'")))?;
        let lookup: HashMap<&str, f64> = index.iter().enumerate().map(|(k, v)| (v.as_str(), k as f64)).collect();
        let unseen = index.len() as f64;
        let distinct = categories.values().as_string::<i32>();
        Ok((0..distinct.len()).map(|k| lookup.get(distinct.value(k)).copied().unwrap_or(unseen)).collect())
    }

    /// Every kept row's class.
    fn labels(&self, path: &Path, label: &LabelValues, row_numbers: &[u64]) -> Result<Vec<u8>> {
        match label {
            LabelValues::Numeric(values) => Ok(values.values().iter().map(|&v| bucket_of(&self.label.buckets, v)).collect()),
            LabelValues::Classes(classes) => {
                let lookup: HashMap<&str, u8> = self.class_names.iter().enumerate().map(|(k, v)| (v.as_str(), k as u8)).collect();
                let distinct = classes.values().as_string::<i32>();
                let codes: Vec<Option<u8>> = (0..distinct.len()).map(|k| lookup.get(distinct.value(k)).copied()).collect();
                let mut labels = Vec::with_capacity(classes.len());
                for (j, &k) in classes.keys().values().iter().enumerate() {
                    let class = codes.get(k as usize).copied().flatten().ok_or_else(|| DataError::InvalidModel {
                        path: path.to_path_buf(),
                        reason: format!(
                            "label '{}' at row {} is not one of the model's classes {:?}",
                            distinct.value(k as usize),
                            row_numbers[j],
                            self.class_names
                        ),
                    })?;
                    labels.push(class);
                }
                Ok(labels)
            }
        }
    }
}

/// The values at `rows`.
fn gather<T: Copy>(values: &[T], rows: &[u32]) -> Vec<T> {
    rows.iter().map(|&i| values[i as usize]).collect()
}

/// Per-row values from per-value ones: through the rows' dictionary keys when coded.
fn of_rows<T: Copy>(keys: Option<&[i32]>, per_value: Vec<T>) -> Vec<T> {
    match keys {
        // Keys of a valid dictionary array index its values.
        Some(keys) => keys.iter().map(|&k| per_value[k as usize]).collect(),
        None => per_value,
    }
}

/// Spark's Bucketizer: class i holds [splits[i-1], splits[i]).
pub fn bucket_of(buckets: &[f64], value: f64) -> u8 {
    buckets.partition_point(|&b| b <= value) as u8
}

pub(crate) fn bucket_names(buckets: &[f64]) -> Vec<String> {
    let bounds: Vec<String> = std::iter::once("-inf".to_string())
        .chain(buckets.iter().map(|b| b.to_string()))
        .chain(std::iter::once("inf".to_string()))
        .collect();
    bounds.windows(2).map(|w| format!("[{},{})", w[0], w[1])).collect()
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

    #[test]
    fn combinations_of_codes_are_numbered_in_order_of_appearance() {
        let a: Categories = vec![Some("x"), Some("y"), Some("x"), None, Some("x")].into_iter().collect();
        let b: Categories = vec![Some("p"), Some("p"), Some("p"), Some("q"), Some("q")].into_iter().collect();
        let (combos, keys) = distinct_combinations(&[&a, &b]).expect("fits a u64 key");
        assert_eq!(combos, vec![vec![Some(0), Some(0)], vec![Some(1), Some(0)], vec![None, Some(1)], vec![Some(0), Some(1)]]);
        assert_eq!(keys.values().to_vec(), vec![0, 1, 0, 2, 3]);
    }
}

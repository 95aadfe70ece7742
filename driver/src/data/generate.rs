//! `canopy-driver gen-data`: a dataset of any size with the reference schema, made by resampling
//! a source file in that schema (by default the embedded flights) with replacement, with small
//! seeded perturbations:
//! - the flight date moves by -3..=3 days (within the same year), and with it DayOfMonth,
//!   DayOfWeek, DayOfYear, FlightDate and the dates of CRSDepTime / CRSArrTime;
//! - DepDelay and ArrDelay move together by the same -4..=4 minutes, so their correlation (0.91
//!   on the real flights) is kept.
//!
//! Each output row is a pure function of (seed, row number), written in chunks, so memory holds
//! the source and one chunk, never the whole output.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use super::load::{SOURCE_TABLE, register_source, scan_error, session};
use super::split::mix;
use crate::error::{DriverError, Result};
use crate::output::write_atomically;

/// Rows per written chunk (and Parquet row group).
const CHUNK_ROWS: usize = 1 << 18;

/// The reference schema, in the reference file's column order.
pub const COLUMNS: [(&str, DataType); 13] = [
    ("ArrDelay", DataType::Float64),
    ("CRSArrTime", DataType::Utf8),
    ("CRSDepTime", DataType::Utf8),
    ("Carrier", DataType::Utf8),
    ("DayOfMonth", DataType::Int64),
    ("DayOfWeek", DataType::Int64),
    ("DayOfYear", DataType::Int64),
    ("DepDelay", DataType::Float64),
    ("Dest", DataType::Utf8),
    ("Distance", DataType::Float64),
    ("FlightDate", DataType::Utf8),
    ("FlightNum", DataType::Utf8),
    ("Origin", DataType::Utf8),
];

fn column_index(name: &str) -> usize {
    COLUMNS.iter().position(|(n, _)| *n == name).unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses the leading `YYYY-MM-DD` of a string into a day number.
fn day_number(text: &str) -> Option<i64> {
    let date = text.get(..10)?;
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    Some(days_from_civil(y, m, d))
}

fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Moves the date of `text` (a date or an ISO date-time) by `shift` days, keeping the rest.
fn shift_text(text: &str, shift: i64) -> String {
    match day_number(text) {
        Some(day) => format!("{}{}", format_day(day + shift), &text[10..]),
        None => text.to_string(),
    }
}

pub struct Generated {
    pub rows: u64,
    pub source_rows: usize,
    /// Pearson correlation of DepDelay and ArrDelay, in the source and in the output.
    pub source_correlation: f64,
    pub correlation: f64,
}

/// Streaming Pearson correlation.
#[derive(Default)]
struct Correlation {
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    syy: f64,
    sxy: f64,
}

impl Correlation {
    fn add(&mut self, x: f64, y: f64) {
        self.n += 1.0;
        self.sx += x;
        self.sy += y;
        self.sxx += x * x;
        self.syy += y * y;
        self.sxy += x * y;
    }
    fn value(&self) -> f64 {
        let cov = self.sxy - self.sx * self.sy / self.n;
        let vx = self.sxx - self.sx * self.sx / self.n;
        let vy = self.syy - self.sy * self.sy / self.n;
        cov / (vx * vy).sqrt()
    }
}

/// Reads the source in the reference schema, every column cast to its reference type.
async fn load_source(source: &Path) -> Result<RecordBatch> {
    let ctx = session();
    register_source(&ctx, source).await?;
    let query_error = |e: datafusion::error::DataFusionError| DriverError::Query { path: source.to_path_buf(), reason: e.to_string() };
    let df = ctx.table(SOURCE_TABLE).await.map_err(query_error)?;
    let available: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    for (name, _) in &COLUMNS {
        if !available.iter().any(|a| a == name) {
            return Err(canopy_pipeline::DataError::MissingColumn {
                path: source.to_path_buf(),
                column: name.to_string(),
                role: "a column of the reference schema",
                available: available.join(", "),
            }
            .into());
        }
    }
    let select: Vec<String> = COLUMNS.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let sql = format!("SELECT {} FROM {SOURCE_TABLE} WHERE \"ArrDelay\" IS NOT NULL AND \"DepDelay\" IS NOT NULL", select.join(", "));
    let batches = ctx.sql(&sql).await.map_err(query_error)?.collect().await.map_err(|e| scan_error(source, &available, e))?;
    let schema = reference_schema();
    let typed = batches
        .iter()
        .map(|b| {
            let columns =
                COLUMNS.iter().enumerate().map(|(i, (_, t))| cast(b.column(i), t)).collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| canopy_pipeline::DataError::WrongColumnType {
            path: source.to_path_buf(),
            column: "(reference schema)".into(),
            expected: "the reference types",
            found: e.to_string(),
        })?;
    let all = concat_batches(&schema, &typed).map_err(|e| DriverError::Internal(e.to_string()))?;
    if all.num_rows() == 0 {
        return Err(DriverError::EmptyDataset { path: source.to_path_buf(), stage: "to resample" });
    }
    Ok(all)
}

fn reference_schema() -> SchemaRef {
    Arc::new(Schema::new(COLUMNS.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
}

/// Builds output rows `first..first + count`.
fn chunk(src: &RecordBatch, seed: u64, first: u64, count: usize, corr: &mut Correlation) -> Result<RecordBatch> {
    let n = src.num_rows() as u64;
    let internal = |e: arrow::error::ArrowError| DriverError::Internal(e.to_string());
    let mut picks = Vec::with_capacity(count);
    let mut shifts = Vec::with_capacity(count);
    let mut jitters = Vec::with_capacity(count);
    for row in first..first + count as u64 {
        let h = mix(seed ^ mix(row));
        picks.push(u32::try_from(h % n).map_err(|e| DriverError::Internal(e.to_string()))?);
        shifts.push((mix(h) % 7) as i64 - 3);
        jitters.push((mix(h ^ 0x5EED) % 9) as f64 - 4.0);
    }
    let indices = UInt32Array::from(picks);
    let mut columns: Vec<ArrayRef> =
        src.columns().iter().map(|c| take(c, &indices, None)).collect::<std::result::Result<_, _>>().map_err(internal)?;

    let f64_col = |columns: &[ArrayRef], name: &str| columns[column_index(name)].as_primitive::<arrow::datatypes::Float64Type>().clone();
    let dep = f64_col(&columns, "DepDelay");
    let arr = f64_col(&columns, "ArrDelay");
    let dep: Float64Array = dep.iter().zip(&jitters).map(|(v, j)| v.map(|v| v + j)).collect();
    let arr: Float64Array = arr.iter().zip(&jitters).map(|(v, j)| v.map(|v| v + j)).collect();
    for (d, a) in dep.iter().zip(arr.iter()) {
        if let (Some(d), Some(a)) = (d, a) {
            corr.add(d, a);
        }
    }
    columns[column_index("DepDelay")] = Arc::new(dep);
    columns[column_index("ArrDelay")] = Arc::new(arr);

    // Dates: the flight date moves, within its year, and every date column follows it.
    let flight_dates = columns[column_index("FlightDate")].as_string::<i32>().clone();
    let mut effective = Vec::with_capacity(count);
    let (mut dom, mut dow, mut doy, mut dates) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, text) in flight_dates.iter().enumerate() {
        let Some(day) = text.and_then(day_number) else {
            effective.push(0);
            dom.push(None);
            dow.push(None);
            doy.push(None);
            dates.push(text.map(str::to_string));
            continue;
        };
        let (year, _, _) = civil_from_days(day);
        let (first_day, last_day) = (days_from_civil(year, 1, 1), days_from_civil(year, 12, 31));
        let moved = (day + shifts[i]).clamp(first_day, last_day);
        effective.push(moved - day);
        let (_, _, d) = civil_from_days(moved);
        dom.push(Some(d));
        // 1970-01-01 was a Thursday (ISO 4).
        dow.push(Some((moved + 3).rem_euclid(7) + 1));
        doy.push(Some(moved - first_day + 1));
        dates.push(Some(format!("{}{}", format_day(moved), text.map_or("", |t| &t[10.min(t.len())..]))));
    }
    columns[column_index("DayOfMonth")] = Arc::new(Int64Array::from(dom));
    columns[column_index("DayOfWeek")] = Arc::new(Int64Array::from(dow));
    columns[column_index("DayOfYear")] = Arc::new(Int64Array::from(doy));
    columns[column_index("FlightDate")] = Arc::new(StringArray::from(dates));
    for name in ["CRSDepTime", "CRSArrTime"] {
        let texts = columns[column_index(name)].as_string::<i32>().clone();
        let moved: StringArray = texts.iter().zip(&effective).map(|(t, s)| t.map(|t| shift_text(t, *s))).collect();
        columns[column_index(name)] = Arc::new(moved);
    }
    RecordBatch::try_new(src.schema(), columns).map_err(internal)
}

pub async fn generate(source: &Path, rows: u64, seed: u64, out: &Path) -> Result<Generated> {
    let src = load_source(source).await?;
    let mut source_corr = Correlation::default();
    let (dep, arr) = (
        src.column(column_index("DepDelay")).as_primitive::<arrow::datatypes::Float64Type>(),
        src.column(column_index("ArrDelay")).as_primitive::<arrow::datatypes::Float64Type>(),
    );
    for i in 0..src.num_rows() {
        if dep.is_valid(i) && arr.is_valid(i) {
            source_corr.add(dep.value(i), arr.value(i));
        }
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| DriverError::Internal(e.to_string()))?))
        .set_max_row_group_row_count(Some(CHUNK_ROWS))
        .build();
    let mut corr = Correlation::default();
    let mut failure = None;
    write_atomically(out, |file| {
        let mut writer = ArrowWriter::try_new(file, src.schema(), Some(props)).map_err(|e| e.to_string())?;
        let mut first = 0u64;
        while first < rows {
            let count = usize::try_from((rows - first).min(CHUNK_ROWS as u64)).unwrap_or(CHUNK_ROWS);
            let batch = match chunk(&src, seed, first, count, &mut corr) {
                Ok(b) => b,
                Err(e) => {
                    let text = e.to_string();
                    failure = Some(e);
                    return Err(text);
                }
            };
            writer.write(&batch).map_err(|e| e.to_string())?;
            first += count as u64;
        }
        writer.close().map(|_| ()).map_err(|e| e.to_string())
    })
    .map_err(|e| failure.take().unwrap_or(e))?;
    Ok(Generated { rows, source_rows: src.num_rows(), source_correlation: source_corr.value(), correlation: corr.value() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2013, 12, 31)), (2013, 12, 31));
        assert_eq!(civil_from_days(days_from_civil(2016, 2, 29) + 1), (2016, 3, 1));
        // 2013-01-01 was a Tuesday: ISO day 2.
        assert_eq!((days_from_civil(2013, 1, 1) + 3).rem_euclid(7) + 1, 2);
        assert_eq!(shift_text("2013-01-01T23:59:00.000", -1), "2012-12-31T23:59:00.000");
        assert_eq!(shift_text("2013-03-01", -1), "2013-02-28");
    }
}

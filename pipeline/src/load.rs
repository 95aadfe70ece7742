//! Opening a data file with DataFusion (CSV and JSON inputs, and `gen-data`'s source): the
//! format comes from the extension, compression from an optional `.gz` / `.bz2` suffix. Rows
//! are read in file order (one scan partition) because the seeded split assigns rows by their
//! position.

use std::path::{Path, PathBuf};

use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::DataFusionError;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};

use crate::error::{DataError, Result};

/// The table name the source file is registered under.
pub const SOURCE_TABLE: &str = "source";

/// Rows of a CSV file DataFusion reads to infer the column types (its default, made explicit
/// because errors cite it).
pub const CSV_SCHEMA_ROWS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Json,
}

/// Format, compression and the full suffix DataFusion must see, from the file name.
pub fn detect_format(path: &Path) -> Result<(Format, FileCompressionType, String)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    let (stem, compression, compression_suffix) = if let Some(stem) = name.strip_suffix(".gz") {
        (stem, FileCompressionType::GZIP, ".gz")
    } else if let Some(stem) = name.strip_suffix(".bz2") {
        (stem, FileCompressionType::BZIP2, ".bz2")
    } else {
        (name.as_str(), FileCompressionType::UNCOMPRESSED, "")
    };
    let unknown = || DataError::UnknownExtension { path: path.to_path_buf() };
    let ext = Path::new(stem).extension().and_then(|e| e.to_str()).ok_or_else(unknown)?;
    let format = match ext {
        "parquet" if compression_suffix.is_empty() => Format::Parquet,
        "csv" => Format::Csv,
        "json" | "jsonl" | "ndjson" => Format::Json,
        _ => return Err(unknown()),
    };
    // DataFusion matches the suffix case-sensitively, so take it from the real name.
    let real = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let suffix_len = ext.len() + 1 + compression_suffix.len();
    let suffix = real[real.len() - suffix_len..].to_string();
    Ok((format, compression, suffix))
}

/// A session whose scans keep file order.
pub fn session() -> SessionContext {
    SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1))
}

/// Registers `path` as [`SOURCE_TABLE`] after checking that it exists and can be opened.
pub async fn register_source(ctx: &SessionContext, path: &Path) -> Result<()> {
    let unreadable = |reason: String| DataError::UnreadableFile { path: path.to_path_buf(), reason };
    let (format, _, _) = detect_format(path)?;
    open_checked(path, path, format)?;
    let absolute: PathBuf = std::fs::canonicalize(path).map_err(|e| unreadable(e.to_string()))?;
    let location = absolute.to_str().ok_or_else(|| unreadable("path is not valid UTF-8".into()))?;
    register_url(ctx, path, location).await
}

/// Registers the file at `location` (an absolute path, or a URL whose object store `ctx` knows)
/// as [`SOURCE_TABLE`]; errors name `path`.
pub async fn register_url(ctx: &SessionContext, path: &Path, location: &str) -> Result<()> {
    let unreadable = |reason: String| DataError::UnreadableFile { path: path.to_path_buf(), reason };
    let (format, compression, suffix) = detect_format(path)?;
    let registered = match format {
        Format::Parquet => ctx.register_parquet(SOURCE_TABLE, location, ParquetReadOptions::default().file_extension(&suffix)).await,
        Format::Csv => {
            let options = CsvReadOptions::new()
                .has_header(true)
                .schema_infer_max_records(CSV_SCHEMA_ROWS)
                .file_extension(&suffix)
                .file_compression_type(compression);
            ctx.register_csv(SOURCE_TABLE, location, options).await
        }
        Format::Json => {
            let options = JsonReadOptions::default().file_extension(&suffix).file_compression_type(compression);
            ctx.register_json(SOURCE_TABLE, location, options).await
        }
    };
    registered.map_err(|e| unreadable(e.to_string()))
}

/// Opens the local file `file` (named `path` in errors) after checking that it is a regular,
/// non-empty file and, for Parquet, that it has Parquet's magic bytes.
pub(crate) fn open_checked(file: &Path, path: &Path, format: Format) -> Result<std::fs::File> {
    let unreadable = |reason: String| DataError::UnreadableFile { path: path.to_path_buf(), reason };
    let meta = std::fs::metadata(file).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let mut opened = std::fs::File::open(file).map_err(|e| unreadable(e.to_string()))?;
    // DataFusion reads an empty file as a table without columns, which would surface as a
    // missing column; say what is wrong instead.
    if meta.len() == 0 {
        return Err(unreadable("the file is empty (0 bytes)".into()));
    }
    if format == Format::Parquet && !has_parquet_magic(&mut opened, meta.len()).map_err(|e| unreadable(e.to_string()))? {
        return Err(unreadable("not a Parquet file (it does not start and end with the magic bytes PAR1)".into()));
    }
    Ok(opened)
}

/// A Parquet file starts and ends with "PAR1".
fn has_parquet_magic(file: &mut std::fs::File, len: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if len < 8 {
        return Ok(false);
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
    file.read_exact(&mut head)?;
    file.seek(SeekFrom::End(-4))?;
    file.read_exact(&mut tail)?;
    Ok(&head == b"PAR1" && &tail == b"PAR1")
}

/// A failed scan of `path`, whose columns are `columns` in file order. Arrow's CSV reader
/// names a value it cannot parse by column position and line ("for column 7 at line 15000");
/// this names the column. Arrow's line N is data row N (the header is line 0).
pub fn scan_error(path: &Path, columns: &[String], e: DataFusionError) -> DataError {
    let text = e.to_string();
    match csv_parse_error(&text) {
        Some((index, row, detail)) if index < columns.len() => {
            DataError::UnparsableValue { path: path.to_path_buf(), column: columns[index].clone(), row, detail }
        }
        _ => DataError::Query { path: path.to_path_buf(), reason: text },
    }
}

/// (column index, line, what is wrong) from one of Arrow's CSV parse errors:
/// "Error while parsing value 'V' as type 'T' for column C at line L. Row data: '...'" or
/// "Error parsing column C at line L: DETAIL".
fn csv_parse_error(text: &str) -> Option<(usize, u64, String)> {
    const VALUE: &str = "Error while parsing value '";
    const COLUMN: &str = "Error parsing column ";
    if let Some(start) = text.find(VALUE) {
        let rest = &text[start + VALUE.len()..];
        let (head, tail) = rest.split_once("' for column ")?;
        // The value may contain anything, so its end is the last "' as type '".
        let (value, data_type) = head.rsplit_once("' as type '")?;
        let (column, tail) = tail.split_once(" at line ")?;
        let line = tail.split(|c: char| !c.is_ascii_digit()).next()?;
        let detail = format!("'{value}' is not a valid {data_type}, the type inferred from the file's first {CSV_SCHEMA_ROWS} rows");
        return Some((column.parse().ok()?, line.parse().ok()?, detail));
    }
    let rest = &text[text.find(COLUMN)? + COLUMN.len()..];
    let (column, tail) = rest.split_once(" at line ")?;
    let (line, detail) = tail.split_once(": ")?;
    Some((column.parse().ok()?, line.parse().ok()?, detail.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_extensions() {
        let f = |name: &str| detect_format(Path::new(name)).map(|(f, c, s)| (f, c.is_compressed(), s));
        assert_eq!(f("a/flights.parquet").ok(), Some((Format::Parquet, false, ".parquet".into())));
        assert_eq!(f("x.jsonl.bz2").ok(), Some((Format::Json, true, ".jsonl.bz2".into())));
        assert_eq!(f("X.CSV.GZ").ok(), Some((Format::Csv, true, ".CSV.GZ".into())));
        assert_eq!(f("x.ndjson").ok(), Some((Format::Json, false, ".ndjson".into())));
        assert!(matches!(f("x.xlsx"), Err(DataError::UnknownExtension { .. })));
        assert!(matches!(f("x.parquet.gz"), Err(DataError::UnknownExtension { .. })));
        assert!(matches!(f("noext"), Err(DataError::UnknownExtension { .. })));
    }

    #[test]
    fn csv_parse_errors_name_the_column() {
        let columns: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let e = DataFusionError::Execution(
            "Arrow error: Parser error: Error while parsing value 'x' as type' as type 'Float64' for column 1 at line 1040. Row data: '[1,x]'".into(),
        );
        assert_eq!(
            scan_error(Path::new("f.csv"), &columns, e).to_string(),
            "column 'b' of 'f.csv' cannot be read at row 1040: 'x' as type' is not a valid Float64, the type inferred from the file's first 1000 rows"
        );
        let e = DataFusionError::Execution("Parser error: Error parsing column 0 at line 7: bad date".into());
        assert_eq!(scan_error(Path::new("f.csv"), &columns, e).to_string(), "column 'a' of 'f.csv' cannot be read at row 7: bad date");
        let e = DataFusionError::Execution("Error parsing column 9 at line 7: bad".into());
        assert!(matches!(scan_error(Path::new("f.csv"), &columns, e), DataError::Query { .. }));
    }
}

//! Opening a data file with DataFusion: the format comes from the extension, compression from
//! an optional `.gz` / `.bz2` suffix. Rows are read in file order (one scan partition) because
//! the seeded split assigns rows by their position.

use std::path::{Path, PathBuf};

use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};

use crate::error::{DriverError, Result};

/// The table name the source file is registered under.
pub const SOURCE_TABLE: &str = "source";

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
    let unknown = || DriverError::UnknownExtension { path: path.to_path_buf() };
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
    let unreadable = |reason: String| DriverError::UnreadableFile { path: path.to_path_buf(), reason };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let (format, compression, suffix) = detect_format(path)?;
    let absolute: PathBuf = std::fs::canonicalize(path).map_err(|e| unreadable(e.to_string()))?;
    let location = absolute.to_str().ok_or_else(|| unreadable("path is not valid UTF-8".into()))?;
    let registered = match format {
        Format::Parquet => ctx.register_parquet(SOURCE_TABLE, location, ParquetReadOptions::default().file_extension(&suffix)).await,
        Format::Csv => {
            let options = CsvReadOptions::new().has_header(true).file_extension(&suffix).file_compression_type(compression);
            ctx.register_csv(SOURCE_TABLE, location, options).await
        }
        Format::Json => {
            let options = JsonReadOptions::default().file_extension(&suffix).file_compression_type(compression);
            ctx.register_json(SOURCE_TABLE, location, options).await
        }
    };
    registered.map_err(|e| unreadable(e.to_string()))
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
        assert!(matches!(f("x.xlsx"), Err(DriverError::UnknownExtension { .. })));
        assert!(matches!(f("x.parquet.gz"), Err(DriverError::UnknownExtension { .. })));
        assert!(matches!(f("noext"), Err(DriverError::UnknownExtension { .. })));
    }
}

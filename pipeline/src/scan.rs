//! Reading an input file in units, the same way in both passes of preparation. The file is a
//! local path, a `file://` URL or an object-store URL (s3://, gs://, az://, http(s)://) read with
//! `object_store`, configured from the environment as its builders document (AWS_*, GOOGLE_*,
//! AZURE_*).
//!
//! A Parquet file is read row group by row group, by every core at once, with the parquet
//! crate: a row's number is its row group's first row (summed from the footer) plus its offset,
//! so numbering does not depend on which thread read what. A pass may read only some ranges of
//! rows (an executor's partitions); a row group that a range cuts, or a local one larger than a
//! unit, is read in pieces through a row selection. String columns are read as
//! dictionaries (the generated and embedded files store them dictionary-encoded), so later steps
//! work on codes. CSV and JSON files are streamed by DataFusion in file order.
//!
//! Work on a unit returns a value; `for_each` returns them in file order, whatever ran first.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::{Buf, Bytes};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::reader::{ChunkReader, Length};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;
use url::Url;

use crate::error::{DataError, Result, with_causes};
use crate::load::{Format, SOURCE_TABLE, detect_format, open_checked, register_source, register_url, scan_error, session};

/// Most rows decoded at once from one row group: bounds the memory of a unit whatever the
/// file's row group size.
const UNIT_ROWS: usize = 1 << 18;

/// Rows of the input, numbered from `first_row` (1-based, in file order).
pub struct Unit {
    pub first_row: u64,
    pub batch: RecordBatch,
}

/// What a file looked like when it was opened; checked again before each pass so a file that
/// changes between the passes is an error rather than a mixed model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    /// A local file's modification time, an object's ETag and modification time.
    version: String,
}

enum Reader {
    Parquet { metadata: ArrowReaderMetadata, first_rows: Vec<u64>, rows: u64 },
    Stream { ctx: SessionContext },
}

/// Where the input lives.
enum Location {
    Local(PathBuf),
    Remote(Remote),
}

impl Location {
    fn of(data: &Path) -> Result<Location> {
        let text = data.to_string_lossy();
        if !text.contains("://") {
            return Ok(Location::Local(data.to_path_buf()));
        }
        let bad = |reason: String| DataError::UnreadableFile { path: data.to_path_buf(), reason };
        let url = Url::parse(&text).map_err(|e| bad(format!("not a URL: {e}")))?;
        if url.scheme() == "file" {
            return url.to_file_path().map(Location::Local).map_err(|()| bad("a file:// URL must hold an absolute local path".into()));
        }
        let unsupported =
            || bad(format!("{}:// URLs are not supported; use a path, file://, s3://, gs://, az:// or http(s)://", url.scheme()));
        let (scheme, object) = ObjectStoreScheme::parse(&url).map_err(|_| unsupported())?;
        let built = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                AmazonS3Builder::from_env().with_url(url.as_str()).with_retry(retry()).build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            ObjectStoreScheme::GoogleCloudStorage => GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry())
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            ObjectStoreScheme::MicrosoftAzure => MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry())
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            ObjectStoreScheme::Http => {
                // An http:// URL asks for plain HTTP; object_store refuses it unless allowed.
                let options = ClientOptions::new().with_allow_http(url.scheme() == "http");
                HttpBuilder::new()
                    .with_url(&url[..url::Position::BeforePath])
                    .with_client_options(options)
                    .with_retry(retry())
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            _ => return Err(unsupported()),
        };
        let store = built.map_err(|e| bad(remote_error(&e)))?;
        Ok(Location::Remote(Remote::start(url, store, object)?))
    }

    async fn fingerprint(&self, path: &Path) -> Result<Fingerprint> {
        let unreadable = |reason: String| DataError::UnreadableFile { path: path.to_path_buf(), reason };
        match self {
            Location::Local(file) => {
                let meta = std::fs::metadata(file).map_err(|e| unreadable(e.to_string()))?;
                let modified = meta.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
                Ok(Fingerprint { len: meta.len(), version: format!("{modified:?}") })
            }
            Location::Remote(remote) => {
                let meta = remote.head().await.map_err(unreadable)?;
                Ok(Fingerprint { len: meta.size, version: format!("{:?} {}", meta.e_tag, meta.last_modified) })
            }
        }
    }
}

/// Retries of a failed request to an object store: a few, within 30 s, so that a wrong endpoint
/// or a missing object fails the job quickly (object_store's default waits up to 3 minutes).
fn retry() -> RetryConfig {
    RetryConfig { max_retries: 3, retry_timeout: std::time::Duration::from_secs(30), backoff: Default::default() }
}

/// An object in an object store. Every request to the store (HEAD, ranged GETs) goes through
/// one thread that runs the store's HTTP client on a tokio runtime of its own: the decoding
/// threads block on their answers while the driver's runtime may be busy (one worker on a
/// one-core pod), and no pooled connection is ever driven by a runtime that is blocked.
struct Remote {
    url: Url,
    store: Arc<dyn ObjectStore>,
    requests: UnboundedSender<Request>,
}

enum Request {
    Head(oneshot::Sender<std::result::Result<ObjectMeta, String>>),
    Ranges(Vec<Range<u64>>, oneshot::Sender<std::result::Result<Vec<Bytes>, String>>),
}

const STOPPED: &str = "the object-store thread stopped";

impl Remote {
    fn start(url: Url, store: Arc<dyn ObjectStore>, object: object_store::path::Path) -> Result<Remote> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DataError::Internal(format!("cannot start the object-store runtime: {e}")))?;
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let thread_store = store.clone();
        std::thread::Builder::new()
            .name("canopy-object-store".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Ends when the source, and with it the sender, is dropped.
                    while let Some(request) = incoming.recv().await {
                        let (store, object) = (thread_store.clone(), object.clone());
                        tokio::spawn(async move {
                            match request {
                                Request::Head(reply) => {
                                    let _ = reply.send(store.head(&object).await.map_err(|e| remote_error(&e)));
                                }
                                Request::Ranges(ranges, reply) => {
                                    let _ = reply.send(store.get_ranges(&object, &ranges).await.map_err(|e| remote_error(&e)));
                                }
                            }
                        });
                    }
                })
            })
            .map_err(|e| DataError::Internal(format!("cannot start the object-store thread: {e}")))?;
        Ok(Remote { url, store, requests })
    }

    async fn head(&self) -> std::result::Result<ObjectMeta, String> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Head(reply)).map_err(|_| STOPPED.to_string())?;
        answer.await.map_err(|_| STOPPED.to_string())?
    }

    async fn range(&self, range: Range<u64>) -> std::result::Result<Bytes, String> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Ranges(std::slice::from_ref(&range).to_vec(), reply)).map_err(|_| STOPPED.to_string())?;
        answer.await.map_err(|_| STOPPED.to_string())??.pop().ok_or_else(|| format!("no bytes for the range {range:?}"))
    }

    /// Fetches `ranges` of the object, blocking this thread (a decoding thread, outside any
    /// runtime).
    fn ranges_blocking(&self, ranges: Vec<Range<u64>>) -> std::result::Result<Vec<Bytes>, String> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Ranges(ranges, reply)).map_err(|_| STOPPED.to_string())?;
        answer.blocking_recv().map_err(|_| STOPPED.to_string())?
    }
}

/// An object store's error with its causes.
fn remote_error(e: &object_store::Error) -> String {
    with_causes(e.to_string(), e)
}

/// The byte ranges of one row group's column chunks, fetched before decoding; the Parquet
/// reader reads only inside them.
struct Prefetched {
    len: u64,
    ranges: Vec<(u64, Bytes)>,
}

impl Prefetched {
    fn slice(&self, start: u64, length: Option<usize>) -> datafusion::parquet::errors::Result<Bytes> {
        let found = self.ranges.iter().find(|(at, bytes)| {
            start >= *at && length.map_or(start < at + bytes.len() as u64, |n| start + n as u64 <= at + bytes.len() as u64)
        });
        let (at, bytes) =
            found.ok_or_else(|| datafusion::parquet::errors::ParquetError::General(format!("bytes at offset {start} were not fetched")))?;
        let from = (start - at) as usize;
        Ok(match length {
            Some(n) => bytes.slice(from..from + n),
            None => bytes.slice(from..),
        })
    }
}

impl Length for Prefetched {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Prefetched {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// An opened input file.
pub struct Source {
    /// The path or URL, as the user gave it.
    pub path: PathBuf,
    /// The file's columns, with the types units carry (strings of Parquet files as
    /// Dictionary(Int32, Utf8)).
    pub schema: SchemaRef,
    location: Location,
    fingerprint: Fingerprint,
    reader: Reader,
}

impl Source {
    pub async fn open(path: &Path) -> Result<Source> {
        let unreadable = |reason: String| DataError::UnreadableFile { path: path.to_path_buf(), reason };
        let (format, _, _) = detect_format(path)?;
        let location = Location::of(path)?;
        let fingerprint = location.fingerprint(path).await?;
        if format != Format::Parquet {
            // DataFusion checks the file and infers its schema.
            let ctx = session();
            match &location {
                Location::Local(file) => register_source(&ctx, file).await?,
                Location::Remote(remote) => {
                    ctx.register_object_store(&remote.url, remote.store.clone());
                    register_url(&ctx, path, remote.url.as_str()).await?;
                }
            }
            let schema = ctx.table(SOURCE_TABLE).await.map_err(|e| query(path, e))?.schema().as_arrow().clone();
            return Ok(Source {
                path: path.to_path_buf(),
                schema: Arc::new(schema),
                location,
                fingerprint,
                reader: Reader::Stream { ctx },
            });
        }
        let metadata = match &location {
            Location::Local(file) => {
                let file = open_checked(file, path, Format::Parquet)?;
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| unreadable(e.to_string()))?
            }
            Location::Remote(remote) => {
                let footer = remote_footer(remote, path, fingerprint.len).await?;
                ArrowReaderMetadata::try_new(Arc::new(footer), ArrowReaderOptions::new()).map_err(|e| unreadable(e.to_string()))?
            }
        };
        let hint = Arc::new(dictionary_strings(metadata.schema()));
        let metadata = ArrowReaderMetadata::try_new(metadata.metadata().clone(), ArrowReaderOptions::new().with_schema(hint.clone()))
            .map_err(|e| unreadable(e.to_string()))?;
        let mut first_rows = Vec::with_capacity(metadata.metadata().num_row_groups());
        let mut next = 1u64;
        for group in metadata.metadata().row_groups() {
            first_rows.push(next);
            next += u64::try_from(group.num_rows()).map_err(|_| unreadable("a row group has a negative row count".into()))?;
        }
        let rows = next - 1;
        Ok(Source { path: path.to_path_buf(), schema: hint, location, fingerprint, reader: Reader::Parquet { metadata, first_rows, rows } })
    }

    /// The file's row count when its footer says it (Parquet).
    pub fn rows(&self) -> Option<u64> {
        match &self.reader {
            Reader::Parquet { rows, .. } => Some(*rows),
            Reader::Stream { .. } => None,
        }
    }

    /// Runs `work` on every unit of the columns `columns` (in the file's column order), in
    /// parallel where the format allows, and returns its results in file order. The first
    /// error in file order wins.
    pub async fn for_each<T: Send>(&self, columns: &[usize], work: impl Fn(Unit) -> Result<T> + Sync) -> Result<Vec<T>> {
        self.check_unchanged().await?;
        match &self.reader {
            Reader::Parquet { first_rows, rows, .. } => {
                self.parquet_units(&pieces(first_rows, *rows, 1..rows + 1, self.split_groups()), columns, &work)
            }
            Reader::Stream { ctx } => self.stream_units(ctx, columns, &work).await,
        }
    }

    /// [`Self::for_each`] on the rows numbered in `ranges` only (ascending, disjoint), of a
    /// Parquet file: what an executor reads of its partitions, all ranges at once on every core.
    pub async fn for_each_in<T: Send>(
        &self,
        columns: &[usize],
        ranges: &[Range<u64>],
        work: impl Fn(Unit) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        self.check_unchanged().await?;
        let Reader::Parquet { first_rows, rows: total, .. } = &self.reader else {
            return Err(DataError::UnreadableFile {
                path: self.path.clone(),
                reason: "only Parquet files can be read by row range".into(),
            });
        };
        let mut all = Vec::new();
        for rows in ranges {
            if rows.start < 1 || rows.end > total + 1 {
                return Err(DataError::UnreadableFile {
                    path: self.path.clone(),
                    reason: format!("rows {}..{} were asked for; the file has {total}", rows.start, rows.end),
                });
            }
            all.extend(pieces(first_rows, *total, rows.clone(), self.split_groups()));
        }
        self.parquet_units(&all, columns, &work)
    }

    /// A short description of the file's version (size, modification time or ETag), which a
    /// reader elsewhere compares with its own opening of the same file.
    pub fn version(&self) -> String {
        format!("{} bytes, {}", self.fingerprint.len, self.fingerprint.version)
    }

    async fn check_unchanged(&self) -> Result<()> {
        let now = self.location.fingerprint(&self.path).await?;
        if now != self.fingerprint {
            return Err(DataError::UnreadableFile {
                path: self.path.clone(),
                reason: format!(
                    "the file changed while it was being read (size {} bytes, then {} bytes, or its version changed); \
                     run again once it is complete",
                    self.fingerprint.len, now.len
                ),
            });
        }
        Ok(())
    }

    /// Whether a large row group is read as several pieces, one per core: locally, where a piece
    /// costs only its decoding; a remote piece would fetch its whole column chunks again.
    fn split_groups(&self) -> bool {
        matches!(self.location, Location::Local(_))
    }

    fn parquet_units<T: Send>(&self, pieces: &[Piece], columns: &[usize], work: &(impl Fn(Unit) -> Result<T> + Sync)) -> Result<Vec<T>> {
        let Reader::Parquet { metadata, first_rows, .. } = &self.reader else {
            return Err(DataError::Internal("a Parquet read of a file that is not Parquet".into()));
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(pieces.len()).max(1);
        let next = AtomicUsize::new(0);
        let read_piece = |piece: &Piece| -> Result<Vec<T>> {
            let group = piece.group;
            let failed =
                |e: &dyn std::fmt::Display| DataError::Query { path: self.path.clone(), reason: format!("row group {group}: {e}") };
            let first_row = first_rows[group] + piece.rows.start;
            match &self.location {
                Location::Local(file) => {
                    // Checked when the source was opened; each pass checks its fingerprint.
                    let opened = File::open(file).map_err(|e| failed(&e))?;
                    read_piece(opened, metadata, piece, columns, first_row, work, &failed)
                }
                Location::Remote(remote) => {
                    // The column chunks of every leaf under the projected columns.
                    let leaves = metadata.parquet_schema();
                    let ranges: Vec<Range<u64>> = (metadata.metadata().row_group(group).columns().iter().enumerate())
                        .filter(|(leaf, _)| columns.contains(&leaves.get_column_root_idx(*leaf)))
                        .map(|(_, chunk)| {
                            let (start, len) = chunk.byte_range();
                            start..start + len
                        })
                        .collect();
                    let fetched = remote.ranges_blocking(ranges.clone()).map_err(|e| failed(&e))?;
                    let ranges = ranges.iter().map(|r| r.start).zip(fetched).collect();
                    let reader = Prefetched { len: self.fingerprint.len, ranges };
                    read_piece(reader, metadata, piece, columns, first_row, work, &failed)
                }
            }
        };
        let count = pieces.len();
        let mut results: Vec<(usize, Result<Vec<T>>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                return done;
                            }
                            let result = read_piece(&pieces[i]);
                            let failed = result.is_err();
                            done.push((i, result));
                            if failed {
                                // Stop taking work; the error is reported in file order below.
                                next.store(count, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            // A panic in a worker is a bug; re-raise it rather than lose rows.
            workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        results.sort_by_key(|(i, _)| *i);
        let mut out = Vec::new();
        for (_, result) in results {
            out.extend(result?);
        }
        Ok(out)
    }

    async fn stream_units<T>(&self, ctx: &SessionContext, columns: &[usize], work: &impl Fn(Unit) -> Result<T>) -> Result<Vec<T>> {
        let names: Vec<&str> = columns.iter().map(|&i| self.schema.field(i).name().as_str()).collect();
        let all: Vec<String> = self.schema.fields().iter().map(|f| f.name().clone()).collect();
        let table = ctx.table(SOURCE_TABLE).await.map_err(|e| query(&self.path, e))?;
        let mut stream =
            table.select_columns(&names).map_err(|e| query(&self.path, e))?.execute_stream().await.map_err(|e| query(&self.path, e))?;
        let mut out = Vec::new();
        let mut first_row = 1u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| scan_error(&self.path, &all, e))?;
            let rows = batch.num_rows() as u64;
            out.push(work(Unit { first_row, batch })?);
            first_row += rows;
        }
        Ok(out)
    }
}

/// Rows of one row group read together: `rows` counts from the group's first row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    group: usize,
    rows: Range<u64>,
}

/// The pieces that cover the file's rows `wanted` (numbered from 1), in file order, given each
/// row group's first row and the file's row count. With `split`, no piece is longer than
/// [`UNIT_ROWS`], so even one large row group is read on every core.
fn pieces(first_rows: &[u64], total: u64, wanted: Range<u64>, split: bool) -> Vec<Piece> {
    let mut out = Vec::new();
    for (group, &first) in first_rows.iter().enumerate() {
        let end = first_rows.get(group + 1).copied().unwrap_or(total + 1);
        let (start, stop) = (wanted.start.max(first), wanted.end.min(end));
        let mut at = start;
        while at < stop {
            let until = if split { stop.min(at + UNIT_ROWS as u64) } else { stop };
            out.push(Piece { group, rows: at - first..until - first });
            at = until;
        }
    }
    out
}

/// Decodes one piece of a row group, columns `columns`, in units of at most [`UNIT_ROWS`] rows.
fn read_piece<R: ChunkReader + 'static, T>(
    reader: R,
    metadata: &ArrowReaderMetadata,
    piece: &Piece,
    columns: &[usize],
    first_row: u64,
    work: &impl Fn(Unit) -> Result<T>,
    failed: &dyn Fn(&dyn std::fmt::Display) -> DataError,
) -> Result<Vec<T>> {
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata.clone());
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let group_rows = metadata.metadata().row_group(piece.group).num_rows() as u64;
    let mut builder = builder.with_projection(mask).with_row_groups(vec![piece.group]).with_batch_size(UNIT_ROWS);
    if piece.rows != (0..group_rows) {
        let (skip, take) = (piece.rows.start as usize, (piece.rows.end - piece.rows.start) as usize);
        let mut selectors = vec![RowSelector::select(take)];
        if skip > 0 {
            selectors.insert(0, RowSelector::skip(skip));
        }
        builder = builder.with_row_selection(RowSelection::from(selectors));
    }
    let batches = builder.build().map_err(|e| failed(&e))?;
    let mut first_row = first_row;
    let mut out = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|e| failed(&e))?;
        let rows = batch.num_rows() as u64;
        out.push(work(Unit { first_row, batch })?);
        first_row += rows;
    }
    Ok(out)
}

/// A remote Parquet file's footer: its last 8 bytes give the metadata's length.
async fn remote_footer(remote: &Remote, path: &Path, len: u64) -> Result<ParquetMetaData> {
    let unreadable = |reason: String| DataError::UnreadableFile { path: path.to_path_buf(), reason };
    let not_parquet = || unreadable("not a Parquet file (it does not end with the magic bytes PAR1)".into());
    if len < 12 {
        return Err(not_parquet());
    }
    let tail = remote.range(len - 8..len).await.map_err(unreadable)?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Err(not_parquet());
    }
    let metadata_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if metadata_len + 12 > len {
        return Err(unreadable(format!("its footer declares {metadata_len} bytes of metadata in a file of {len} bytes")));
    }
    let footer = remote.range(len - 8 - metadata_len..len - 8).await.map_err(unreadable)?;
    ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| unreadable(e.to_string()))
}

fn query(path: &Path, e: datafusion::error::DataFusionError) -> DataError {
    DataError::Query { path: path.to_path_buf(), reason: e.to_string() }
}

/// The file's schema with its string columns as Dictionary(Int32, Utf8): the reader then keeps
/// the file's dictionary pages as codes instead of expanding every value.
fn dictionary_strings(schema: &Schema) -> Schema {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => f.as_ref().clone().with_data_type(dictionary.clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_exactly_the_wanted_rows_in_file_order() {
        // Row groups of 3, 4 and UNIT_ROWS + 2 rows: first rows 1, 4, 8.
        let big = UNIT_ROWS as u64 + 2;
        let first_rows = [1, 4, 8];
        let total = 7 + big;
        let piece = |group, rows: Range<u64>| Piece { group, rows };
        assert_eq!(pieces(&first_rows, total, 2..6, true), vec![piece(0, 1..3), piece(1, 0..2)]);
        assert_eq!(pieces(&first_rows, total, 1..total + 1, false), vec![piece(0, 0..3), piece(1, 0..4), piece(2, 0..big)]);
        assert_eq!(
            pieces(&first_rows, total, 1..total + 1, true),
            vec![piece(0, 0..3), piece(1, 0..4), piece(2, 0..UNIT_ROWS as u64), piece(2, UNIT_ROWS as u64..big)]
        );
        assert_eq!(pieces(&first_rows, total, 5..5, true), vec![]);
    }

    #[tokio::test]
    async fn a_file_that_changes_between_passes_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, "a,b\n1,2\n").expect("written");
        let source = Source::open(&path).await.expect("opens");
        let rows = source.for_each(&[0, 1], |unit| Ok(unit.batch.num_rows())).await.expect("first pass");
        assert_eq!(rows, vec![1]);
        std::fs::write(&path, "a,b\n1,2\n3,4\n").expect("rewritten");
        let refused = source.for_each(&[0, 1], |unit| Ok(unit.batch.num_rows())).await.err().map(|e| e.to_string());
        let expected = format!(
            "cannot read '{}': the file changed while it was being read (size 8 bytes, then 12 bytes, or its version changed); \
             run again once it is complete",
            path.display()
        );
        assert_eq!(refused, Some(expected));
    }
}

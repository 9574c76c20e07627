//! [`RecordFileSource`]: CSV and JSON-lines files read record by record, so a bad record
//! becomes a dead letter (file, line, raw text, error) instead of stopping the pipeline.
//!
//! ```text
//!   files (path order) ─▶ byte chunks ─▶ records (a newline ends one; in CSV not inside quotes)
//!        ─▶ up to max_rows records ─▶ CsvDecoder / JsonDecoder (vectorized, bad ones set aside)
//!        ─▶ rows + RejectedRecord { partition: file, offset: line, payload, error }
//! ```
//!
//! [`Source::position`] counts records taken, good or bad (headers and blank lines are not
//! records), so a replayed epoch reads the same records and writes the same letters again.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::time::Instant;

use crate::codec::{CsvDecoder, JsonDecoder, PayloadDecoder, TimestampUnit};
use crate::error::{ConnectorError, Result};
use crate::traits::{Position, RejectedRecord, Source, SourcePoll};

/// How records are cut out of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// CSV: a newline outside quotes ends a record; the first record of each file is a header
    /// when `has_header`.
    Csv {
        /// The field separator.
        delimiter: u8,
        /// Whether each file starts with a header line.
        has_header: bool,
    },
    /// One JSON object per line.
    Json,
}

/// A record cut out of a file: where it starts and its bytes (without the newline).
struct Record {
    line: u64,
    bytes: Vec<u8>,
    /// Why it is set aside before decoding (an unclosed quote).
    broken: Option<String>,
}

/// The file being read.
struct OpenFile {
    name: String,
    chunks: BoxStream<'static, object_store::Result<Bytes>>,
    /// Bytes read but not yet cut into records.
    buffer: Vec<u8>,
    /// Where `buffer` starts: its line number (1-based).
    line: u64,
    /// The chunks have all been read.
    ended: bool,
    /// The header still has to be skipped.
    header_pending: bool,
}

/// Reads the CSV or JSON-lines files at a `LOCATION`, in path order (see the module docs).
///
/// # Cancellation
/// A poll may be dropped while it waits for a file's bytes: records are only counted in
/// [`Source::position`] once returned, and bytes read stay buffered.
pub struct RecordFileSource {
    table: String,
    schema: SchemaRef,
    format: RecordFormat,
    decoder: Arc<dyn PayloadDecoder>,
    store: Arc<dyn ObjectStore>,
    files: VecDeque<Path>,
    current: Option<OpenFile>,
    /// Records cut but not yet returned (kept across a dropped poll).
    ready: VecDeque<(String, Record)>,
    position: u64,
    rejected: Vec<RejectedRecord>,
    /// Bytes of the records returned (each line with its end).
    bytes_read: u64,
}

impl fmt::Debug for RecordFileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordFileSource")
            .field("table", &self.table)
            .field("format", &self.format)
            .field("position", &self.position)
            .field("files_left", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl RecordFileSource {
    /// A source over `files` (in this order) of `store`, decoding rows of `schema`.
    pub fn new(
        table: &str,
        schema: SchemaRef,
        format: RecordFormat,
        timestamp_unit: Option<TimestampUnit>,
        store: Arc<dyn ObjectStore>,
        files: Vec<Path>,
    ) -> Self {
        let decoder: Arc<dyn PayloadDecoder> = match format {
            RecordFormat::Csv { delimiter, .. } => Arc::new(CsvDecoder::with_timestamp_unit(
                Arc::clone(&schema),
                delimiter,
                timestamp_unit,
            )),
            RecordFormat::Json => Arc::new(JsonDecoder::with_timestamp_unit(
                Arc::clone(&schema),
                timestamp_unit,
            )),
        };
        Self {
            table: table.to_string(),
            schema,
            format,
            decoder,
            store,
            files: files.into(),
            current: None,
            ready: VecDeque::new(),
            position: 0,
            rejected: Vec::new(),
            bytes_read: 0,
        }
    }

    fn external(&self, file: &str, e: impl fmt::Display) -> ConnectorError {
        ConnectorError::external(&self.table, format!("cannot read file '{file}': {e}"))
    }

    /// Cuts records out of the current file until `want` are ready or the files end.
    async fn fill(&mut self, want: usize) -> Result<()> {
        while self.ready.len() < want {
            if self.current.is_none() {
                let Some(path) = self.files.pop_front() else {
                    return Ok(());
                };
                let name = path.to_string();
                let chunks = self
                    .store
                    .get(&path)
                    .await
                    .map_err(|e| self.external(&name, e))?
                    .into_stream();
                self.current = Some(OpenFile {
                    name,
                    chunks,
                    buffer: Vec::new(),
                    line: 1,
                    ended: false,
                    header_pending: matches!(
                        self.format,
                        RecordFormat::Csv {
                            has_header: true,
                            ..
                        }
                    ),
                });
            }
            let Some(file) = self.current.as_mut() else {
                continue;
            };
            let csv = matches!(self.format, RecordFormat::Csv { .. });
            cut_records(file, csv, &mut self.ready);
            if self.ready.len() >= want {
                return Ok(());
            }
            if file.ended {
                // The last record may lack a final newline.
                while !file.buffer.is_empty() {
                    let bytes = std::mem::take(&mut file.buffer);
                    match unclosed_quote(csv, &bytes) {
                        Some(newline) => {
                            // Read as one record, it would swallow every line to the end of
                            // the file: its first line is set aside, the lines after it are
                            // read as records again.
                            let line = file.line;
                            let swallowed = bytes[newline + 1..]
                                .split(|b| *b == b'\n')
                                .filter(|l| !l.is_empty())
                                .count();
                            let reason = format!(
                                "unclosed quote: a quote opened on line {line} of '{}' never closes, so the record would swallow the {swallowed} lines after it to the end of the file; line {line} is set aside and the lines after it are read as records",
                                file.name
                            );
                            self.ready.push_back((
                                file.name.clone(),
                                Record {
                                    line,
                                    bytes: bytes[..newline].to_vec(),
                                    broken: Some(reason),
                                },
                            ));
                            file.buffer = bytes[newline + 1..].to_vec();
                            file.line = line + 1;
                            cut_records(file, csv, &mut self.ready);
                        }
                        None => push_record(file, file.line, bytes, &mut self.ready),
                    }
                }
                self.current = None;
                continue;
            }
            match file.chunks.next().await {
                Some(Ok(chunk)) => file.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    let name = file.name.clone();
                    return Err(self.external(&name, e));
                }
                None => file.ended = true,
            }
        }
        Ok(())
    }
}

/// Where the first line of `rest` (what is left of a file once its records are cut) ends, when
/// it opens a quote that never closes and more lines follow.
fn unclosed_quote(csv: bool, rest: &[u8]) -> Option<usize> {
    let quotes = rest.iter().filter(|b| **b == b'"').count();
    if !csv || quotes % 2 == 0 {
        return None;
    }
    rest.iter().position(|b| *b == b'\n')
}

/// Moves every complete record of `file.buffer` to `out`.
fn cut_records(file: &mut OpenFile, csv: bool, out: &mut VecDeque<(String, Record)>) {
    let mut start = 0;
    let mut in_quotes = false;
    let mut line = file.line;
    let mut record_line = file.line;
    let buffer = std::mem::take(&mut file.buffer);
    for (i, byte) in buffer.iter().enumerate() {
        match byte {
            b'"' if csv => in_quotes = !in_quotes,
            b'\n' => {
                line += 1;
                if !in_quotes {
                    push_record(file, record_line, buffer[start..i].to_vec(), out);
                    start = i + 1;
                    record_line = line;
                }
            }
            _ => {}
        }
    }
    file.buffer = buffer[start..].to_vec();
    file.line = record_line;
}

/// Adds a record, skipping blank lines and a pending header.
fn push_record(
    file: &mut OpenFile,
    line: u64,
    mut bytes: Vec<u8>,
    out: &mut VecDeque<(String, Record)>,
) {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    if file.header_pending {
        file.header_pending = false;
        return;
    }
    out.push_back((
        file.name.clone(),
        Record {
            line,
            bytes,
            broken: None,
        },
    ));
}

#[async_trait]
impl Source for RecordFileSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn poll_batch(&mut self, max_rows: usize, _deadline: Instant) -> Result<SourcePoll> {
        let max_rows = max_rows.max(1);
        self.fill(max_rows).await?;
        if self.ready.is_empty() {
            return Ok(SourcePoll::Exhausted);
        }
        let take = max_rows.min(self.ready.len());
        let records: Vec<(String, Record)> = self.ready.drain(..take).collect();
        self.bytes_read += records
            .iter()
            .map(|(_, r)| r.bytes.len() as u64 + 1)
            .sum::<u64>();
        let whole: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].1.broken.is_none())
            .collect();
        let payloads: Vec<&[u8]> = whole
            .iter()
            .map(|i| records[*i].1.bytes.as_slice())
            .collect();
        let (batch, rejected) = self.decoder.decode(&payloads).map_err(|e| {
            ConnectorError::Internal(format!("table '{}': decoding records: {e}", self.table))
        })?;
        let mut errors: Vec<(usize, String)> = rejected
            .into_iter()
            .map(|r| (whole[r.index], r.error))
            .chain(
                records
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, r))| r.broken.clone().map(|why| (i, why))),
            )
            .collect();
        errors.sort_by_key(|(i, _)| *i);
        for (index, error) in errors {
            let (file, record) = &records[index];
            self.rejected.push(RejectedRecord {
                partition: file.clone(),
                offset: record.line,
                key: None,
                payload: record.bytes.clone(),
                error,
            });
        }
        self.position += take as u64;
        Ok(SourcePoll::Data(batch))
    }

    fn position(&self) -> Position {
        Position::single(self.position)
    }

    fn take_rejected(&mut self) -> Vec<RejectedRecord> {
        std::mem::take(&mut self.rejected)
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.bytes_read)
    }

    /// Skips forward to `position` without decoding (files are read from the start when a
    /// pipeline restarts, so a restore always seeks forward).
    async fn seek(&mut self, position: &Position) -> Result<()> {
        let target = position.offset();
        if target < self.position {
            return Err(ConnectorError::Internal(format!(
                "table '{}': cannot seek back from record {} to record {target}",
                self.table, self.position
            )));
        }
        while self.position < target {
            let step = usize::try_from(target - self.position)
                .unwrap_or(usize::MAX)
                .min(65_536);
            self.fill(step).await?;
            if self.ready.is_empty() {
                return Err(ConnectorError::external(
                    &self.table,
                    format!(
                        "the files hold {} records, fewer than the {target} already read before the restart: did they change?",
                        self.position
                    ),
                ));
            }
            let take = step.min(self.ready.len());
            self.ready.drain(..take);
            self.position += take as u64;
        }
        Ok(())
    }
}

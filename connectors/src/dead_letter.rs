//! Dead letters: rows the pipeline could not process, written aside with the reason.
//!
//! A [`DeadLetterWriter`] writes one JSON-lines file per epoch, `epoch-{epoch:020}.jsonl`, in
//! the directory named by a table's `dead_letter` option. Each line is
//!
//! ```text
//! {"source":"ride_requests","reason":"late event","epoch":7,"row":{"request_id":1,...}}
//! ```
//!
//! Writing an epoch again replaces its file, so a replayed epoch never duplicates letters.
//!
//! `'dead_letter' 'kafka://host:port/topic'` sends each letter (the same JSON line) as one
//! message to a Kafka topic instead, keyed so a replayed epoch's letters repeat their keys;
//! `'dead_letter' 'delta:<location>'` appends them as rows of a Delta table, one commit per
//! epoch with a `txn` action, so a replayed epoch is not written twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::delta::DeltaLetters;
use crate::error::{ConnectorError, Result};
use crate::kafka::KafkaLetters;
use crate::location::Location;
use crate::traits::{RejectedRecord, SinkContext};

/// Name used for errors about the dead-letter destination.
const DEAD_LETTER: &str = "dead_letter";

/// Rows that failed for one reason, from one source.
#[derive(Debug, Clone)]
pub struct DeadLetterBatch {
    /// The table (or operator) the rows came from.
    pub source: String,
    /// Why every row of `rows` was rejected.
    pub reason: String,
    /// The rejected rows.
    pub rows: RecordBatch,
}

impl DeadLetterBatch {
    /// Letters for records `source` read but could not turn into rows: one row each with
    /// `partition`, `offset`, `key`, `payload` (the bytes as text when they are UTF-8), `payload_hex`
    /// (when they are not) and `error`.
    ///
    /// # Errors
    /// [`ConnectorError::Internal`] if the columns do not form a batch (a bug).
    pub fn rejected(source: &str, records: &[RejectedRecord]) -> Result<Self> {
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
        let hex = |b: &[u8]| {
            std::str::from_utf8(b)
                .is_err()
                .then(|| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Utf8, false),
            Field::new("offset", DataType::UInt64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("payload", DataType::Utf8, true),
            Field::new("payload_hex", DataType::Utf8, true),
            Field::new("error", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.partition.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                records.iter().map(|r| r.offset),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.key.as_deref().and_then(text)),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| text(&r.payload)),
            )),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| hex(&r.payload)),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.error.as_str()),
            )),
        ];
        let rows = RecordBatch::try_new(schema, columns).map_err(|e| {
            ConnectorError::Internal(format!("building dead letters for '{source}': {e}"))
        })?;
        Ok(Self {
            source: source.to_string(),
            reason: "undecodable record".to_string(),
            rows,
        })
    }
}

/// Writes dead letters as JSON lines, one file per epoch (see the [module docs](self)).
///
/// ```no_run
/// # async fn demo(rows: arrow::record_batch::RecordBatch) -> volley_connectors::Result<()> {
/// use volley_connectors::dead_letter::{DeadLetterBatch, DeadLetterWriter};
///
/// let mut writer = DeadLetterWriter::new("out/dead_letters")?;
/// let letter = DeadLetterBatch { source: "rides".into(), reason: "late event".into(), rows };
/// writer.write_epoch(7, &[letter]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeadLetterWriter {
    destination: Destination,
    written: Arc<AtomicU64>,
    instance: Option<String>,
}

/// Where letters go.
#[derive(Debug)]
enum Destination {
    /// One JSON-lines file per epoch in a directory.
    Files {
        store: Arc<dyn ObjectStore>,
        dir: Path,
    },
    /// One message per letter in a Kafka topic.
    Kafka(KafkaLetters),
    /// Rows of a Delta table, one commit per epoch.
    Delta(Box<DeltaLetters>),
}

impl DeadLetterWriter {
    /// A writer into directory `dir` (a path, `file://` or `memory://` URL), or into a Kafka
    /// topic (`kafka://host:port/topic`: one message per letter, see
    /// [`crate::kafka::KafkaLetters`]).
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when `dir` is not a usable location.
    pub fn new(dir: &str) -> Result<Self> {
        Self::for_pipeline(dir, &SinkContext::new("volley"))
    }

    /// Like [`DeadLetterWriter::new`], for the pipeline (and share) `context` names: a Delta
    /// destination (`delta:<location>`) records its epochs under that pipeline's app id.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when `dir` is not a usable location.
    pub fn for_pipeline(dir: &str, context: &SinkContext) -> Result<Self> {
        let destination = if dir.starts_with(crate::delta::DEAD_LETTER_SCHEME) {
            Destination::Delta(Box::new(DeltaLetters::new(dir, context.clone())))
        } else if dir.starts_with(crate::kafka::DEAD_LETTER_SCHEME) {
            Destination::Kafka(KafkaLetters::open(dir)?)
        } else {
            let (store, dir) = Location::resolve(DEAD_LETTER, dir)?.into_parts();
            Destination::Files { store, dir }
        };
        Ok(Self {
            destination,
            written: Arc::default(),
            // Several shares of a pipeline (group mode) name their files and keys apart.
            instance: context.instance.clone(),
        })
    }

    /// A writer into an already resolved location.
    pub fn from_location(location: Location) -> Self {
        let (store, dir) = location.into_parts();
        Self {
            destination: Destination::Files { store, dir },
            written: Arc::default(),
            instance: None,
        }
    }

    /// The name of the file holding epoch `epoch`'s letters.
    pub fn file_name(epoch: u64) -> String {
        format!("epoch-{epoch:020}.jsonl")
    }

    /// Letters (rows) written so far by this writer, replays included.
    pub fn letters_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// A handle to the letters counter, for metrics.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }

    /// Writes every letter of epoch `epoch` as one file, replacing any earlier write of the same
    /// epoch. Writes nothing when there are no rows.
    ///
    /// # Errors
    /// [`ConnectorError::External`] when a row cannot be encoded or the file cannot be written.
    pub async fn write_epoch(&mut self, epoch: u64, letters: &[DeadLetterBatch]) -> Result<()> {
        let rows: u64 = letters.iter().map(|l| l.rows.num_rows() as u64).sum();
        if rows == 0 {
            return Ok(());
        }
        match &mut self.destination {
            Destination::Files { store, dir } => {
                let mut out = Vec::new();
                for letter in letters.iter().filter(|l| l.rows.num_rows() > 0) {
                    encode_letters(epoch, letter, &mut out)?;
                }
                let name = match &self.instance {
                    Some(instance) => format!("epoch-{instance}-{epoch:020}.jsonl"),
                    None => Self::file_name(epoch),
                };
                let path = dir.clone().join(name.as_str());
                store.put(&path, PutPayload::from(out)).await.map_err(|e| {
                    ConnectorError::External {
                        table: DEAD_LETTER.to_string(),
                        message: format!("cannot write '{path}': {e}"),
                        retryable: true,
                    }
                })?;
            }
            Destination::Kafka(kafka) => {
                let mut keyed: Vec<(String, Vec<u8>)> = Vec::new();
                for letter in letters.iter().filter(|l| l.rows.num_rows() > 0) {
                    let mut out = Vec::new();
                    encode_letters(epoch, letter, &mut out)?;
                    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let n = keyed.len();
                        let key = match &self.instance {
                            Some(instance) => format!("{}/{instance}/{epoch}/{n}", letter.source),
                            None => format!("{}/{epoch}/{n}", letter.source),
                        };
                        keyed.push((key, line.to_vec()));
                    }
                }
                kafka.send(epoch, &keyed).await?;
            }
            Destination::Delta(delta) => {
                let source = letters
                    .first()
                    .map(|l| l.source.clone())
                    .unwrap_or_default();
                let parts: Vec<(&str, &RecordBatch)> = letters
                    .iter()
                    .filter(|l| l.rows.num_rows() > 0)
                    .map(|l| (l.reason.as_str(), &l.rows))
                    .collect();
                delta.write(epoch, &source, &parts).await?;
            }
        }
        self.written.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }
}

/// Appends one line per row of `letter` to `out`. Rows are encoded a whole batch at a time by
/// arrow's JSON writer; each encoded row is then wrapped with the shared prefix.
fn encode_letters(epoch: u64, letter: &DeadLetterBatch, out: &mut Vec<u8>) -> Result<()> {
    let mut rows = Vec::new();
    let mut writer = crate::codec::json_lines_writer(&mut rows);
    writer
        .write(&letter.rows)
        .and_then(|()| writer.finish())
        .map_err(|e| {
            ConnectorError::external(
                DEAD_LETTER,
                format!("cannot encode rows from '{}': {e}", letter.source),
            )
        })?;
    drop(writer);

    let mut prefix = Vec::from(&b"{\"source\":"[..]);
    push_json_string(&mut prefix, &letter.source);
    prefix.extend_from_slice(b",\"reason\":");
    push_json_string(&mut prefix, &letter.reason);
    prefix.extend_from_slice(format!(",\"epoch\":{epoch},\"row\":").as_bytes());

    out.reserve(rows.len() + letter.rows.num_rows() * (prefix.len() + 2));
    // JSON escapes newlines inside strings, so every '\n' ends a row.
    for row in rows.split(|&b| b == b'\n').filter(|r| !r.is_empty()) {
        out.extend_from_slice(&prefix);
        out.extend_from_slice(row);
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

/// Writes `text` as a JSON string literal.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use arrow::json::ReaderBuilder;

    use super::*;

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("payload", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![
                    Some("a\nb"),
                    None,
                    Some("{\"x\": 1}"),
                ])),
            ],
        )
        .unwrap()
    }

    fn letter(source: &str, reason: &str, rows: RecordBatch) -> DeadLetterBatch {
        DeadLetterBatch {
            source: source.into(),
            reason: reason.into(),
            rows,
        }
    }

    #[tokio::test]
    async fn letters_are_json_lines_with_reason_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = DeadLetterWriter::new(dir.path().to_str().unwrap()).unwrap();
        let letters = [
            letter("rides", "late \"event\"", rows()),
            letter("rides", "empty", rows().slice(0, 0)),
            letter("clicks", "bad\tpayload", rows().slice(2, 1)),
        ];
        writer.write_epoch(7, &letters).await.unwrap();
        writer.write_epoch(7, &letters).await.unwrap();
        writer.write_epoch(8, &[]).await.unwrap();
        assert_eq!(writer.letters_written(), 8);

        // A replayed epoch replaces its file; an empty epoch writes none.
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, vec![DeadLetterWriter::file_name(7)]);
        let text =
            std::fs::read_to_string(dir.path().join(DeadLetterWriter::file_name(7))).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");

        // Every line is one JSON object that arrow's own reader decodes.
        let letter_schema = Arc::new(Schema::new(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("epoch", DataType::Int64, false),
            Field::new(
                "row",
                DataType::Struct(rows().schema().fields().clone()),
                false,
            ),
        ]));
        let mut reader = ReaderBuilder::new(letter_schema)
            .build(text.as_bytes())
            .unwrap();
        let decoded = reader.next().unwrap().unwrap();
        assert_eq!(decoded.num_rows(), 4);
        let sources = decoded.column(0).as_string::<i32>();
        assert_eq!(
            sources.iter().flatten().collect::<Vec<_>>(),
            ["rides", "rides", "rides", "clicks"]
        );
        let reasons = decoded.column(1).as_string::<i32>();
        assert_eq!(reasons.value(0), "late \"event\"");
        assert_eq!(reasons.value(3), "bad\tpayload");
        let epochs = decoded.column(2).as_primitive::<Int64Type>();
        assert!(epochs.values().iter().all(|&e| e == 7));
        let row = decoded.column(3).as_struct();
        assert_eq!(
            row.column(0).as_primitive::<Int64Type>().values(),
            &[1, 2, 3, 3]
        );
        let payload = row.column(1).as_string::<i32>();
        assert_eq!(
            payload.iter().collect::<Vec<_>>(),
            [Some("a\nb"), None, Some("{\"x\": 1}"), Some("{\"x\": 1}")]
        );
    }
}

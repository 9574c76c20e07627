//! A Delta table as the dead-letter destination (`'dead_letter' 'delta:<location>'`).
//!
//! Rows `(source, reason, epoch, row)`, `row` being the rejected row as JSON text. Each epoch's
//! letters are one commit carrying a `txn` action (app id `<pipeline>:<source>_dead_letters`,
//! plus the share in group mode), so a replayed epoch is not written twice.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use volley_sql::{TableDecl, TableOptions};

use super::sink::DeltaSink;
use crate::error::{ConnectorError, Result};
use crate::traits::{Sink, SinkContext};

/// The prefix that names a Delta dead-letter destination.
pub const SCHEME: &str = "delta:";

/// Writes one source's dead letters into a Delta table, opened at the first letter.
#[derive(Debug)]
pub struct DeltaLetters {
    location: String,
    context: SinkContext,
    sink: Option<DeltaSink>,
}

/// The columns of a Delta dead-letter table.
pub fn letters_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("row", DataType::Utf8, false),
    ]))
}

impl DeltaLetters {
    /// A writer for `delta:<location>` on behalf of `context`'s pipeline (and share).
    pub fn new(url: &str, context: SinkContext) -> Self {
        Self {
            location: url.strip_prefix(SCHEME).unwrap_or(url).to_string(),
            context,
            sink: None,
        }
    }

    /// Appends `source`'s letters of `epoch`: `(reason, rows)` pairs.
    ///
    /// # Errors
    /// The table cannot be opened, created or committed to; a row cannot be encoded.
    pub async fn write(
        &mut self,
        epoch: u64,
        source: &str,
        letters: &[(&str, &RecordBatch)],
    ) -> Result<()> {
        let batch = letters_batch(epoch, source, letters)?;
        let sink = match &mut self.sink {
            Some(sink) => sink,
            None => {
                let table = TableDecl {
                    name: format!("{source}_dead_letters"),
                    kind: "DELTA".into(),
                    location: self.location.clone(),
                    declared_schema: None,
                    options: TableOptions::unchecked("dead_letter", []),
                    watermark: None,
                    at: volley_sql::StatementRef::default(),
                };
                self.sink
                    .insert(DeltaSink::open(&table, letters_schema(), &self.context).await?)
            }
        };
        sink.write_epoch(epoch, &[batch]).await
    }
}

fn letters_batch(
    epoch: u64,
    source: &str,
    letters: &[(&str, &RecordBatch)],
) -> Result<RecordBatch> {
    let mut reasons: Vec<&str> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    for (reason, batch) in letters {
        let mut json = Vec::new();
        let mut writer = crate::codec::json_lines_writer(&mut json);
        writer
            .write(batch)
            .and_then(|()| writer.finish())
            .map_err(|e| {
                ConnectorError::external(
                    "dead_letter",
                    format!("cannot encode rows from '{source}': {e}"),
                )
            })?;
        drop(writer);
        for line in json.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            reasons.push(reason);
            rows.push(String::from_utf8_lossy(line).into_owned());
        }
    }
    let n = rows.len();
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![source; n])),
        Arc::new(StringArray::from(reasons)),
        Arc::new(Int64Array::from(vec![epoch; n])),
        Arc::new(StringArray::from(rows)),
    ];
    RecordBatch::try_new(letters_schema(), columns)
        .map_err(|e| ConnectorError::Internal(format!("building dead-letter rows: {e}")))
}

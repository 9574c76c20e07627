//! Live tables of a sink without a key: its last N rows, or the rows of the last duration.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;

use crate::error::{ConnectorError, Result};

/// How much of an appended stream a live table keeps (`live_retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The last this many rows.
    Rows(usize),
    /// The rows published within this long (wall-clock time of the epoch that wrote them).
    Duration(Duration),
}

impl Retention {
    /// Reads `'<n> rows'` or a duration (`'10 minutes'`), as the `live_retention` option of
    /// table `table` holds it.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the table, the option and what was expected.
    pub fn parse(table: &str, text: &str) -> Result<Self> {
        let bad = || {
            ConnectorError::config(
                table,
                format!(
                    "option 'live_retention' is '{text}': expected '<n> rows' (such as '10000 rows') or a duration (such as '10 minutes')"
                ),
            )
        };
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        if let Some(number) = lower
            .strip_suffix("rows")
            .or_else(|| lower.strip_suffix("row"))
        {
            let rows: usize = number.trim().parse().map_err(|_| bad())?;
            return if rows == 0 {
                Err(bad())
            } else {
                Ok(Self::Rows(rows))
            };
        }
        match volley_sql::options::parse_duration(trimmed) {
            Some(d) if !d.is_zero() => Ok(Self::Duration(d)),
            _ => Err(bad()),
        }
    }
}

/// The rows a keyless sink was sent, as many as its [`Retention`] keeps. Snapshots share the
/// kept batches (trimming the oldest slices it, copying nothing).
#[derive(Debug)]
pub struct RetainedTable {
    name: String,
    schema: SchemaRef,
    retention: Retention,
    /// Oldest first, each with when it was applied.
    chunks: VecDeque<(Instant, RecordBatch)>,
    rows: usize,
}

/// More chunks than this and the oldest half are merged into one (amortised copying), so a
/// snapshot stays a short list however small the epochs.
const MAX_CHUNKS: usize = 256;

impl RetainedTable {
    /// An empty table `name` of `schema` keeping what `retention` says.
    pub fn new(name: &str, schema: SchemaRef, retention: Retention) -> Self {
        Self {
            name: name.to_string(),
            schema,
            retention,
            chunks: VecDeque::new(),
            rows: 0,
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends `batch`.
    ///
    /// # Errors
    /// [`ConnectorError::Internal`] when `batch` is not of the table's schema (a bug).
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(ConnectorError::Internal(format!(
                "live table '{}': a batch of another schema",
                self.name
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows();
        self.chunks.push_back((Instant::now(), batch.clone()));
        self.trim(Instant::now());
        Ok(())
    }

    fn trim(&mut self, now: Instant) {
        match self.retention {
            Retention::Rows(keep) => {
                while let Some((_, oldest)) = self.chunks.front() {
                    let extra = self.rows.saturating_sub(keep);
                    if extra == 0 {
                        break;
                    }
                    if oldest.num_rows() <= extra {
                        self.rows -= oldest.num_rows();
                        self.chunks.pop_front();
                    } else if let Some((_, oldest)) = self.chunks.front_mut() {
                        *oldest = oldest.slice(extra, oldest.num_rows() - extra);
                        self.rows -= extra;
                    }
                }
            }
            Retention::Duration(keep) => {
                while self
                    .chunks
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > keep)
                {
                    if let Some((_, gone)) = self.chunks.pop_front() {
                        self.rows -= gone.num_rows();
                    }
                }
            }
        }
    }

    /// The rows held now, oldest first, trimmed to the retention as of now.
    ///
    /// # Errors
    /// [`ConnectorError::Internal`] when merging chunks fails (a bug).
    pub fn snapshot(&mut self) -> Result<Arc<[RecordBatch]>> {
        self.trim(Instant::now());
        if self.chunks.len() > MAX_CHUNKS {
            let merge = self.chunks.len() / 2;
            let newest_merged = self.chunks[merge - 1].0;
            let old: Vec<RecordBatch> = self.chunks.drain(..merge).map(|(_, b)| b).collect();
            let merged = concat_batches(&self.schema, &old).map_err(|e| {
                ConnectorError::Internal(format!("live table '{}': {e}", self.name))
            })?;
            // The merged chunk expires with the newest of its parts: rows are kept a little
            // longer, never dropped early.
            self.chunks.push_front((newest_merged, merged));
        }
        Ok(self.chunks.iter().map(|(_, b)| b.clone()).collect())
    }
}

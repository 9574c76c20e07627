//! [`BlackholeSink`]: counts rows, keeps nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::Result;
use crate::traits::Sink;

/// Counts the rows written to it and drops them.
///
/// Writing an epoch again (a replay) does not count its rows twice: a rewrite of the latest
/// epoch replaces its count, and older epochs were already counted.
///
/// ```
/// use volley_connectors::blackhole::BlackholeSink;
///
/// let sink = BlackholeSink::new();
/// let rows = sink.counter(); // keep this handle; the sink itself goes to the engine
/// assert_eq!(rows.load(std::sync::atomic::Ordering::Relaxed), 0);
/// ```
#[derive(Debug, Default)]
pub struct BlackholeSink {
    rows: Arc<AtomicU64>,
    /// The latest epoch written and how many rows it had.
    last: Option<(u64, u64)>,
}

impl BlackholeSink {
    /// A sink with its own counter, starting at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink adding to an existing counter (for example one shown in metrics).
    pub fn with_counter(rows: Arc<AtomicU64>) -> Self {
        Self { rows, last: None }
    }

    /// A handle to the row counter, readable while the sink runs elsewhere.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rows)
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    async fn write_epoch(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        match self.last {
            Some((last, counted)) if epoch == last => {
                self.rows.fetch_sub(counted, Ordering::Relaxed);
                self.rows.fetch_add(rows, Ordering::Relaxed);
            }
            Some((last, _)) if epoch < last => return Ok(()),
            _ => {
                self.rows.fetch_add(rows, Ordering::Relaxed);
            }
        }
        self.last = Some((epoch, rows));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GeneratorOptions, generate_rides};

    #[tokio::test]
    async fn counts_rows_once_per_epoch() {
        let mut sink = BlackholeSink::new();
        let handle = sink.counter();
        let opts = GeneratorOptions::default();
        sink.write_epoch(
            1,
            &[generate_rides(&opts, 0, 10), generate_rides(&opts, 10, 15)],
        )
        .await
        .unwrap();
        sink.write_epoch(2, &[]).await.unwrap();
        sink.write_epoch(3, &[generate_rides(&opts, 0, 7)])
            .await
            .unwrap();
        assert_eq!(sink.rows_written(), 22);
        // Rewriting the latest epoch replaces its count; replaying an older one adds nothing.
        sink.write_epoch(3, &[generate_rides(&opts, 0, 7)])
            .await
            .unwrap();
        sink.write_epoch(1, &[generate_rides(&opts, 0, 15)])
            .await
            .unwrap();
        assert_eq!(handle.load(Ordering::Relaxed), 22);
        sink.close().await.unwrap();
    }
}

//! [`GeneratorSource`]: a generated stream as a replayable [`Source`].

use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::Instant;

use super::generate;
use super::options::{GeneratorOptions, Pace};
use crate::error::Result;
use crate::traits::{Position, Source, SourcePoll};

/// Hands out rows of a generated stream in order; [`Source::position`] is the next row index.
///
/// With [`Pace::Realtime`], row `i` becomes due `i / rate` wall-clock seconds after the first
/// poll (or the last [`GeneratorSource::seek`]); `poll_batch` returns only due rows.
///
/// # Cancellation
/// The position advances only when a batch is returned; dropping a `poll_batch` future while
/// it sleeps loses nothing.
#[derive(Debug)]
pub struct GeneratorSource {
    opts: GeneratorOptions,
    schema: SchemaRef,
    position: u64,
    /// Wall-clock instant at which row `.1` was due (realtime pace only).
    anchor: Option<(Instant, u64)>,
}

impl GeneratorSource {
    /// A source starting at row 0 whose batches carry `schema` (the stream's schema, possibly
    /// with different nullability as declared by the table).
    pub fn new(opts: GeneratorOptions, schema: SchemaRef) -> Self {
        Self {
            opts,
            schema,
            position: 0,
            anchor: None,
        }
    }

    /// Moves to row `row`: the next batch starts there (replay after a restart).
    pub fn seek_row(&mut self, row: u64) {
        self.position = row;
        self.anchor = None;
    }

    /// The options this source generates from.
    pub fn options(&self) -> &GeneratorOptions {
        &self.opts
    }

    /// Rows left before `count`, or `u64::MAX` when unbounded.
    fn remaining(&self) -> u64 {
        self.opts
            .count
            .map_or(u64::MAX, |count| count.saturating_sub(self.position))
    }

    /// Index one past the last row due at `now` (realtime pace).
    fn due_end(&self, now: Instant) -> u64 {
        let (at, row) = self.anchor.unwrap_or((now, self.position));
        let elapsed = now.saturating_duration_since(at).as_nanos();
        let due = elapsed * self.opts.rate_milli() / 1_000_000_000_000 + 1;
        row.saturating_add(u64::try_from(due).unwrap_or(u64::MAX))
    }

    /// The wall-clock instant at which row `i` becomes due (realtime pace).
    fn due_at(&self, i: u64) -> Instant {
        let (at, row) = self.anchor.unwrap_or((Instant::now(), self.position));
        let offset = self.opts.offset_nanos(i.saturating_sub(row));
        at + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    fn rebind(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if batch.schema() == self.schema {
            return Ok(batch);
        }
        super::conform(batch, &self.schema)
    }
}

#[async_trait]
impl Source for GeneratorSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn poll_batch(&mut self, max_rows: usize, deadline: Instant) -> Result<SourcePoll> {
        let max_rows = max_rows.max(1);
        let mut available = self.remaining();
        if available == 0 {
            return Ok(SourcePoll::Exhausted);
        }
        if self.opts.pace == Pace::Realtime {
            let now = Instant::now();
            self.anchor.get_or_insert((now, self.position));
            let mut due = self.due_end(now);
            if due <= self.position {
                tokio::time::sleep_until(deadline.min(self.due_at(self.position))).await;
                due = self.due_end(Instant::now());
                if due <= self.position {
                    return Ok(SourcePoll::Pending);
                }
            }
            available = available.min(due - self.position);
        }
        let take = available.min(max_rows as u64);
        let end = self.position + take;
        let batch = self.rebind(generate(&self.opts, self.position, end))?;
        self.position = end;
        Ok(SourcePoll::Data(batch))
    }

    fn position(&self) -> Position {
        Position::single(self.position)
    }

    async fn seek(&mut self, position: &Position) -> Result<()> {
        self.seek_row(position.offset());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::compute::concat_batches;

    use super::*;
    use crate::generator::{generate_rides, rides_schema};

    async fn drain(source: &mut GeneratorSource, max_rows: usize) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match source.poll_batch(max_rows, deadline).await.unwrap() {
                SourcePoll::Data(batch) => {
                    assert!(batch.num_rows() <= max_rows);
                    out.push(batch);
                }
                SourcePoll::Partitions(_) => panic!("a generator is one stream"),
                SourcePoll::Pending => panic!("max pace is never pending"),
                SourcePoll::Exhausted => return out,
            }
        }
    }

    #[tokio::test]
    async fn stops_after_count() {
        let opts = GeneratorOptions {
            count: Some(100),
            ..GeneratorOptions::default()
        };
        let mut source = GeneratorSource::new(opts.clone(), rides_schema());
        let batches = drain(&mut source, 7).await;
        assert_eq!(batches.len(), 15);
        assert_eq!(source.position().offset(), 100);
        assert_eq!(
            concat_batches(&rides_schema(), &batches).unwrap(),
            generate_rides(&opts, 0, 100)
        );
        assert!(matches!(
            source.poll_batch(7, Instant::now()).await.unwrap(),
            SourcePoll::Exhausted
        ));
    }

    #[tokio::test]
    async fn seek_replays_the_same_rows() {
        let opts = GeneratorOptions {
            count: Some(50),
            ..GeneratorOptions::default()
        };
        let mut source = GeneratorSource::new(opts.clone(), rides_schema());
        let first = drain(&mut source, 16).await;
        source.seek_row(20);
        let replay = drain(&mut source, 9).await;
        let first = concat_batches(&rides_schema(), &first).unwrap();
        assert_eq!(
            concat_batches(&rides_schema(), &replay).unwrap(),
            first.slice(20, 30)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_pace_waits_for_due_rows() {
        let opts = GeneratorOptions {
            rate: 10.0,
            pace: Pace::Realtime,
            ..GeneratorOptions::default()
        };
        let mut source = GeneratorSource::new(opts, rides_schema());
        let start = Instant::now();
        // Row 0 is due at once.
        let SourcePoll::Data(batch) = source
            .poll_batch(100, start + Duration::from_secs(1))
            .await
            .unwrap()
        else {
            panic!("row 0 is due immediately");
        };
        assert_eq!(batch.num_rows(), 1);
        // Nothing more is due before 100 ms: a 50 ms deadline gives Pending.
        let poll = source
            .poll_batch(100, start + Duration::from_millis(50))
            .await
            .unwrap();
        assert!(matches!(poll, SourcePoll::Pending));
        // Waiting until row 1 is due yields it; after a second, ten more rows are due.
        let SourcePoll::Data(batch) = source
            .poll_batch(100, start + Duration::from_secs(1))
            .await
            .unwrap()
        else {
            panic!("row 1 becomes due at 100 ms");
        };
        assert_eq!(batch.num_rows(), 1);
        assert!(Instant::now() >= start + Duration::from_millis(100));
        tokio::time::sleep_until(start + Duration::from_millis(1050)).await;
        let SourcePoll::Data(batch) = source.poll_batch(100, Instant::now()).await.unwrap() else {
            panic!("rows 2..=10 are due");
        };
        assert_eq!(batch.num_rows(), 9);
        assert_eq!(source.position().offset(), 11);
    }
}

//! In-memory source and sink, used by `volley verify` and the parity tests to run the streaming
//! engine over exactly the rows batch mode sees, and to capture what each sink received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::Instant;
use volley_connectors::{Position, Result, Sink, Source, SourcePoll};

/// A bounded source over batches held in memory, yielding at most `max_rows` per poll.
#[derive(Debug)]
pub struct VecSource {
    schema: SchemaRef,
    pending: VecDeque<RecordBatch>,
    position: u64,
}

impl VecSource {
    /// A source yielding `batches` (all of `schema`) in order.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            pending: batches.into_iter().filter(|b| b.num_rows() > 0).collect(),
            position: 0,
        }
    }
}

#[async_trait]
impl Source for VecSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    async fn poll_batch(&mut self, max_rows: usize, _deadline: Instant) -> Result<SourcePoll> {
        let Some(front) = self.pending.pop_front() else {
            return Ok(SourcePoll::Exhausted);
        };
        let take = max_rows.max(1).min(front.num_rows());
        self.position += take as u64;
        if take == front.num_rows() {
            return Ok(SourcePoll::Data(front));
        }
        self.pending
            .push_front(front.slice(take, front.num_rows() - take));
        Ok(SourcePoll::Data(front.slice(0, take)))
    }

    fn position(&self) -> Position {
        Position::single(self.position)
    }

    async fn seek(&mut self, position: &Position) -> Result<()> {
        let mut skip = position.offset().saturating_sub(self.position);
        while skip > 0 {
            let Some(front) = self.pending.pop_front() else {
                break;
            };
            let rows = front.num_rows() as u64;
            if rows > skip {
                let cut = usize::try_from(skip).unwrap_or(usize::MAX);
                self.pending
                    .push_front(front.slice(cut, front.num_rows() - cut));
            }
            let taken = rows.min(skip);
            self.position += taken;
            skip -= taken;
        }
        Ok(())
    }
}

/// Every epoch a [`CollectSink`] received: `(epoch, batches)` in arrival order.
pub type Collected = Arc<Mutex<Vec<(u64, Vec<RecordBatch>)>>>;

/// A sink that keeps what it is given, per epoch (a replayed epoch replaces the earlier write).
#[derive(Debug, Default)]
pub struct CollectSink {
    epochs: Collected,
}

impl CollectSink {
    /// A sink adding to what `epochs` already holds (a restarted job writing where the
    /// previous one left off).
    pub fn resume(epochs: &Collected) -> Self {
        Self {
            epochs: Arc::clone(epochs),
        }
    }

    /// A sink and the handle to read what it collected.
    pub fn new() -> (Self, Collected) {
        let epochs = Collected::default();
        (
            Self {
                epochs: Arc::clone(&epochs),
            },
            epochs,
        )
    }
}

#[async_trait]
impl Sink for CollectSink {
    async fn write_epoch(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let mut epochs = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        epochs.retain(|(e, _)| *e != epoch);
        epochs.push((epoch, batches.to_vec()));
        Ok(())
    }
}

//! Pulls micro-batches from the sources on its own task, so reading and decoding overlap with
//! processing (one core each on a two-core machine).
//!
//! A micro-batch is cut when the sources together have `max_rows` rows OR `max_delay` has
//! passed, whichever comes first.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;
use tokio::time::Instant;
use volley_connectors::{ConnectorError, Source, SourcePoll};

/// How many rows each micro-batch may hold.
#[derive(Debug, Clone)]
pub enum BatchSizing {
    /// The same bound every epoch.
    Fixed(usize),
    /// A seeded pseudo-random bound in `[min, max]` each epoch (used by `verify` and tests).
    Random {
        /// Smallest bound.
        min: usize,
        /// Largest bound.
        max: usize,
        /// Seed; the same seed gives the same sequence of sizes.
        seed: u64,
    },
}

impl BatchSizing {
    fn next(&mut self) -> usize {
        match self {
            BatchSizing::Fixed(n) => (*n).max(1),
            BatchSizing::Random { min, max, seed } => {
                *seed = splitmix64(*seed);
                let span = (*max).saturating_sub(*min) as u64 + 1;
                *min + (*seed % span) as usize
            }
        }
    }
}

/// splitmix64: a tiny, well-mixed, reproducible generator step.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One micro-batch of input: per source (in job order) its batches and whether it has ended.
#[derive(Debug)]
pub struct EpochInput {
    /// Batches per source.
    pub batches: Vec<Vec<RecordBatch>>,
    /// Whether each source is exhausted (bounded input fully read).
    pub exhausted: Vec<bool>,
}

/// Spawns the driver task; it stops when every source is exhausted or the receiver is dropped.
pub fn spawn_driver(
    mut sources: Vec<Box<dyn Source>>,
    mut sizing: BatchSizing,
    max_delay: Duration,
) -> mpsc::Receiver<Result<EpochInput, ConnectorError>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut exhausted = vec![false; sources.len()];
        loop {
            let budget = sizing.next();
            let deadline = Instant::now() + max_delay;
            let mut batches: Vec<Vec<RecordBatch>> = vec![Vec::new(); sources.len()];
            let mut got = 0usize;
            let result = fill(
                &mut sources,
                &mut exhausted,
                &mut batches,
                &mut got,
                budget,
                deadline,
            )
            .await;
            let done = exhausted.iter().all(|e| *e);
            let message = result.map(|()| EpochInput {
                batches,
                exhausted: exhausted.clone(),
            });
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed || done {
                return;
            }
        }
    });
    rx
}

async fn fill(
    sources: &mut [Box<dyn Source>],
    exhausted: &mut [bool],
    batches: &mut [Vec<RecordBatch>],
    got: &mut usize,
    budget: usize,
    deadline: Instant,
) -> Result<(), ConnectorError> {
    loop {
        let mut progressed = false;
        for (i, source) in sources.iter_mut().enumerate() {
            if exhausted[i] || *got >= budget {
                continue;
            }
            match source.poll_batch(budget - *got, deadline).await? {
                SourcePoll::Data(batch) => {
                    *got += batch.num_rows();
                    progressed |= batch.num_rows() > 0;
                    batches[i].push(batch);
                }
                SourcePoll::Pending => {}
                SourcePoll::Exhausted => {
                    exhausted[i] = true;
                    progressed = true;
                }
            }
        }
        if *got >= budget || exhausted.iter().all(|e| *e) || Instant::now() >= deadline {
            return Ok(());
        }
        if !progressed {
            // Every live source is waiting: sleep a little rather than spin.
            tokio::time::sleep(
                Duration::from_millis(1).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
}

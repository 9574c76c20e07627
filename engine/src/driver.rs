//! Pulls micro-batches from the sources on its own task, so reading and decoding overlap with
//! processing (one core each on a two-core machine).
//!
//! A micro-batch is cut when the sources together have `max_rows` rows OR `max_delay` has
//! passed, whichever comes first. Each micro-batch carries every source's position range, which
//! the engine logs before processing it; after a restart, logged epochs are first re-read with
//! exactly their logged ranges ([`EpochRange`]), so an epoch number always means the same input.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;
use tokio::time::Instant;
use volley_connectors::{ConnectorError, Position, RejectedRecord, Source, SourcePoll};

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
#[derive(Debug, Default)]
pub struct EpochInput {
    /// Batches per source.
    pub batches: Vec<Vec<RecordBatch>>,
    /// Whether each source is exhausted (bounded input fully read).
    pub exhausted: Vec<bool>,
    /// Each source's position before and after these batches.
    pub ranges: Vec<(Position, Position)>,
    /// True when this is a logged epoch being re-read after a restart.
    pub replayed: bool,
    /// Per source: records read but not turned into rows (for the dead letters).
    pub rejected: Vec<Vec<RejectedRecord>>,
}

/// A logged epoch to re-read: per source (in job order) where it ended and whether the source
/// was exhausted by then.
#[derive(Debug, Clone)]
pub struct EpochRange {
    /// End position per source.
    pub ends: Vec<Position>,
    /// Exhausted flag per source.
    pub exhausted: Vec<bool>,
}

/// Spawns the driver task: it first re-reads the `replay` epochs, then cuts new micro-batches
/// until every source is exhausted or the receiver is dropped.
pub fn spawn_driver(
    mut sources: Vec<Box<dyn Source>>,
    mut sizing: BatchSizing,
    max_delay: Duration,
    replay: Vec<EpochRange>,
    mut exhausted: Vec<bool>,
) -> mpsc::Receiver<Result<EpochInput, ConnectorError>> {
    let (tx, rx) = mpsc::channel(2);
    exhausted.resize(sources.len(), false);
    tokio::spawn(async move {
        for range in replay {
            let message = replay_epoch(&mut sources, &range).await;
            let failed = message.is_err();
            if let Ok(input) = &message {
                exhausted.clone_from(&input.exhausted);
            }
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
        if exhausted.iter().all(|e| *e) {
            return;
        }
        loop {
            let starts: Vec<Position> = sources.iter().map(|s| s.position()).collect();
            let budget = sizing.next();
            let deadline = Instant::now() + max_delay;
            let mut batches: Vec<Vec<RecordBatch>> = vec![Vec::new(); sources.len()];
            let mut rejected: Vec<Vec<RejectedRecord>> = vec![Vec::new(); sources.len()];
            let mut got = 0usize;
            let result = fill(
                &mut sources,
                &mut exhausted,
                &mut batches,
                &mut rejected,
                &mut got,
                budget,
                deadline,
            )
            .await;
            let done = exhausted.iter().all(|e| *e);
            let ranges = starts
                .into_iter()
                .zip(sources.iter())
                .map(|(start, s)| (start, s.position()))
                .collect();
            let message = result.map(|()| EpochInput {
                batches,
                exhausted: exhausted.clone(),
                ranges,
                replayed: false,
                rejected,
            });
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed || done {
                return;
            }
        }
    });
    rx
}

/// Reads exactly the rows of one logged epoch.
async fn replay_epoch(
    sources: &mut [Box<dyn Source>],
    range: &EpochRange,
) -> Result<EpochInput, ConnectorError> {
    let mut input = EpochInput {
        batches: vec![Vec::new(); sources.len()],
        exhausted: range.exhausted.clone(),
        ranges: Vec::with_capacity(sources.len()),
        replayed: true,
        rejected: vec![Vec::new(); sources.len()],
    };
    for (i, source) in sources.iter_mut().enumerate() {
        let start = source.position();
        let end = range.ends.get(i).cloned().unwrap_or_else(|| start.clone());
        loop {
            let left = source.position().rows_until(&end);
            if left == 0 {
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            let polled = source.poll_until(&end, want, deadline).await?;
            input.rejected[i].extend(source.take_rejected());
            match polled {
                SourcePoll::Data(batch) => input.batches[i].push(batch),
                SourcePoll::Pending => {}
                SourcePoll::Exhausted => {
                    return Err(ConnectorError::Internal(format!(
                        "a source ended at {} while re-reading a logged epoch that reached {end}: its input changed since the epoch was logged",
                        source.position()
                    )));
                }
            }
        }
        input.ranges.push((start, end));
    }
    Ok(input)
}

async fn fill(
    sources: &mut [Box<dyn Source>],
    exhausted: &mut [bool],
    batches: &mut [Vec<RecordBatch>],
    rejected: &mut [Vec<RejectedRecord>],
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
            let polled = source.poll_batch(budget - *got, deadline).await?;
            let bad = source.take_rejected();
            // A rejected record counts against the budget too: it was read.
            *got += bad.len();
            progressed |= !bad.is_empty();
            rejected[i].extend(bad);
            match polled {
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

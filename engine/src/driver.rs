//! Pulls micro-batches from the sources on its own task, so reading and decoding overlap with
//! processing (one core each on a two-core machine).
//!
//! A micro-batch is cut when the sources together have `max_rows` rows OR `max_delay` has
//! passed, whichever comes first. Each micro-batch carries every source's position range, which
//! the engine logs before processing it; after a restart, logged epochs are first re-read with
//! exactly their logged ranges ([`EpochRange`]), so an epoch number always means the same input.

use std::collections::{BTreeMap, BTreeSet};
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

/// What one source read for one micro-batch.
#[derive(Debug, Default)]
pub struct SourceEpoch {
    /// Its batches.
    pub batches: Vec<RecordBatch>,
    /// Beside `batches`: the partition each batch holds (`None`: the source is one stream).
    pub partitions: Vec<Option<String>>,
    /// Its position before these batches.
    pub start: Position,
    /// Its position after them.
    pub end: Position,
    /// Whether it has ended (bounded input fully read).
    pub exhausted: bool,
    /// Records read but not turned into rows (for the dead letters).
    pub rejected: Vec<RejectedRecord>,
    /// Partitions without data for the idle timeout, left out of the watermark.
    pub idle: BTreeSet<String>,
    /// Bytes the source had read by the end of the epoch, when it counts them and was polled.
    pub bytes_read: Option<u64>,
}

impl SourceEpoch {
    /// Rows read.
    pub fn rows(&self) -> u64 {
        self.batches.iter().map(|b| b.num_rows() as u64).sum()
    }
}

/// One micro-batch of input: what each source (in job order) read.
#[derive(Debug, Default)]
pub struct EpochInput {
    /// Per source, in job order.
    pub sources: Vec<SourceEpoch>,
    /// True when this is a logged epoch being re-read after a restart.
    pub replayed: bool,
}

/// A logged epoch to re-read: per source (in job order) where it ended, whether the source
/// was exhausted by then, and which of its partitions were idle.
#[derive(Debug, Clone)]
pub struct EpochRange {
    /// End position per source.
    pub ends: Vec<Position>,
    /// Exhausted flag per source.
    pub exhausted: Vec<bool>,
    /// Idle partitions per source.
    pub idle: Vec<BTreeSet<String>>,
}

/// What the polls of one micro-batch gathered, per source (in job order).
struct Gathered {
    batches: Vec<Vec<RecordBatch>>,
    partitions: Vec<Vec<Option<String>>>,
    rejected: Vec<Vec<RejectedRecord>>,
    /// Per source, the bytes it had read after its last poll (see [`Source::bytes_read`]).
    bytes: Vec<Option<u64>>,
    /// Rows and rejected records, counted against the micro-batch's row budget.
    read: usize,
}

/// What one poll amounted to.
enum Polled {
    Rows(usize),
    Pending,
    Exhausted,
}

impl Gathered {
    fn new(sources: usize) -> Self {
        Self {
            batches: vec![Vec::new(); sources],
            partitions: vec![Vec::new(); sources],
            rejected: vec![Vec::new(); sources],
            bytes: vec![None; sources],
            read: 0,
        }
    }

    /// Takes source `i`'s poll result and rejected records; notes in `seen` when each of its
    /// partitions last gave rows.
    fn add(
        &mut self,
        i: usize,
        polled: SourcePoll,
        rejected: Vec<RejectedRecord>,
        seen: &mut BTreeMap<String, Instant>,
    ) -> Polled {
        self.read += rejected.len();
        let had_rejected = !rejected.is_empty();
        self.rejected[i].extend(rejected);
        let rows = match polled {
            SourcePoll::Data(batch) => {
                let n = batch.num_rows();
                self.batches[i].push(batch);
                self.partitions[i].push(None);
                n
            }
            SourcePoll::Partitions(parts) => {
                let mut n = 0;
                for (partition, batch) in parts {
                    if batch.num_rows() > 0 {
                        seen.insert(partition.clone(), Instant::now());
                    }
                    n += batch.num_rows();
                    self.batches[i].push(batch);
                    self.partitions[i].push(Some(partition));
                }
                n
            }
            SourcePoll::Pending if had_rejected => 0,
            SourcePoll::Pending => return Polled::Pending,
            SourcePoll::Exhausted => return Polled::Exhausted,
        };
        self.read += rows;
        Polled::Rows(rows)
    }

    /// The micro-batch, each source's small batches coalesced up to `coalesce_rows` rows
    /// (see [`crate::coalesce`]).
    fn into_input(
        self,
        exhausted: Vec<bool>,
        ranges: Vec<(Position, Position)>,
        idle: Vec<BTreeSet<String>>,
        replayed: bool,
        coalesce_rows: usize,
    ) -> Result<EpochInput, ConnectorError> {
        // Every list has one entry per source; a short one (it cannot be) reads as empty
        // rather than dropping a source's batches.
        let mut partitions = self.partitions.into_iter();
        let mut rejected = self.rejected.into_iter();
        let mut exhausted = exhausted.into_iter();
        let mut ranges = ranges.into_iter();
        let mut idle = idle.into_iter();
        let mut bytes = self.bytes.into_iter();
        let mut sources = Vec::with_capacity(self.batches.len());
        for batches in self.batches {
            let (start, end) = ranges.next().unwrap_or_default();
            let (batches, partitions) = crate::coalesce::coalesce(
                batches,
                partitions.next().unwrap_or_default(),
                coalesce_rows,
            )
            .map_err(|e| {
                ConnectorError::Internal(format!(
                    "coalescing the micro-batch read from {start} to {end}: {e}"
                ))
            })?;
            sources.push(SourceEpoch {
                batches,
                partitions,
                start,
                end,
                exhausted: exhausted.next().unwrap_or_default(),
                rejected: rejected.next().unwrap_or_default(),
                idle: idle.next().unwrap_or_default(),
                bytes_read: bytes.next().flatten(),
            });
        }
        Ok(EpochInput { sources, replayed })
    }
}

/// Spawns the driver task: it first re-reads the `replay` epochs, then cuts new micro-batches
/// until every source is exhausted or the receiver is dropped. A source partition that gave no
/// row for its source's `idle_timeouts` entry is reported idle in the micro-batch. Small
/// batches are coalesced up to `coalesce_rows` rows.
pub fn spawn_driver(
    mut sources: Vec<Box<dyn Source>>,
    mut sizing: BatchSizing,
    max_delay: Duration,
    replay: Vec<EpochRange>,
    mut exhausted: Vec<bool>,
    idle_timeouts: Vec<Duration>,
    coalesce_rows: usize,
) -> mpsc::Receiver<Result<EpochInput, ConnectorError>> {
    let (tx, rx) = mpsc::channel(2);
    exhausted.resize(sources.len(), false);
    tokio::spawn(async move {
        let started = Instant::now();
        let mut seen: Vec<BTreeMap<String, Instant>> = sources
            .iter()
            .map(|s| s.partitions().into_iter().map(|p| (p, started)).collect())
            .collect();
        for range in replay {
            let message = replay_epoch(&mut sources, &range, &mut seen, coalesce_rows).await;
            let failed = message.is_err();
            if let Ok(input) = &message {
                exhausted = input.sources.iter().map(|s| s.exhausted).collect();
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
            let mut gathered = Gathered::new(sources.len());
            let result = fill(
                &mut sources,
                &mut exhausted,
                &mut gathered,
                &mut seen,
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
            let now = Instant::now();
            let idle = seen
                .iter()
                .enumerate()
                .map(|(i, parts)| {
                    let timeout = idle_timeouts.get(i).copied().unwrap_or(Duration::MAX);
                    parts
                        .iter()
                        .filter(|(_, at)| now.saturating_duration_since(**at) >= timeout)
                        .map(|(p, _)| p.clone())
                        .collect()
                })
                .collect();
            let message = result.and_then(|()| {
                gathered.into_input(exhausted.clone(), ranges, idle, false, coalesce_rows)
            });
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed || done {
                return;
            }
        }
    });
    rx
}

/// Reads exactly the rows of one logged epoch (its idle partitions are the logged ones).
async fn replay_epoch(
    sources: &mut [Box<dyn Source>],
    range: &EpochRange,
    seen: &mut [BTreeMap<String, Instant>],
    coalesce_rows: usize,
) -> Result<EpochInput, ConnectorError> {
    let mut gathered = Gathered::new(sources.len());
    let mut ranges = Vec::with_capacity(sources.len());
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
            let bad = source.take_rejected();
            gathered.bytes[i] = source.bytes_read();
            if let Polled::Exhausted = gathered.add(i, polled, bad, &mut seen[i]) {
                return Err(ConnectorError::Internal(format!(
                    "a source ended at {} while re-reading a logged epoch that reached {end}: its input changed since the epoch was logged",
                    source.position()
                )));
            }
        }
        ranges.push((start, end));
    }
    gathered.into_input(
        range.exhausted.clone(),
        ranges,
        range.idle.clone(),
        true,
        coalesce_rows,
    )
}

async fn fill(
    sources: &mut [Box<dyn Source>],
    exhausted: &mut [bool],
    gathered: &mut Gathered,
    seen: &mut [BTreeMap<String, Instant>],
    budget: usize,
    deadline: Instant,
) -> Result<(), ConnectorError> {
    loop {
        let mut progressed = false;
        for (i, source) in sources.iter_mut().enumerate() {
            if exhausted[i] || gathered.read >= budget {
                continue;
            }
            let polled = source.poll_batch(budget - gathered.read, deadline).await?;
            let bad = source.take_rejected();
            gathered.bytes[i] = source.bytes_read();
            match gathered.add(i, polled, bad, &mut seen[i]) {
                Polled::Rows(n) => progressed |= n > 0,
                Polled::Pending => {}
                Polled::Exhausted => {
                    exhausted[i] = true;
                    progressed = true;
                }
            }
        }
        if gathered.read >= budget || exhausted.iter().all(|e| *e) || Instant::now() >= deadline {
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

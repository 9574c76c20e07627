//! Exactly-once effect across crashes: the epoch log, checkpoints, and restore.
//!
//! 1. Before epoch N runs, its input ranges (per source, start and end position) are logged.
//! 2. After every sink has written epoch N, a checkpoint stores the source positions,
//!    watermarks, window state (Arrow IPC) and totals — when the interval says so.
//! 3. On start, the newest valid checkpoint C is restored, sources seek to its positions, and
//!    every logged epoch after C is re-read with exactly its logged ranges. A replayed epoch
//!    gives the same output as the first time, so sinks that overwrite per epoch (files) or
//!    skip epochs they already committed (Delta's `txn`) end up exactly as without the crash.

pub mod failpoint;
pub mod fingerprint;
pub mod manifest;
pub mod store;

use std::time::{Duration, Instant};

pub use manifest::{EpochLog, Manifest};
pub use store::CheckpointStore;

use crate::error::{EngineError, Result};

/// How often to checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointInterval {
    /// After every N-th epoch.
    Epochs(u64),
    /// After the first epoch at least this long after the previous checkpoint.
    Every(Duration),
}

impl CheckpointInterval {
    /// Parses `N` (epochs) or a duration such as `10s`, `500ms`, `1m`.
    ///
    /// # Errors
    /// Anything else, or zero.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Ok(n) = text.parse::<u64>() {
            return if n == 0 {
                Err(EngineError::Usage(
                    "--checkpoint-interval 0: use --no-checkpoint to turn checkpoints off".into(),
                ))
            } else {
                Ok(Self::Epochs(n))
            };
        }
        volley_sql::options::parse_duration(text)
            .filter(|d| !d.is_zero())
            .map(Self::Every)
            .ok_or_else(|| {
                EngineError::Usage(format!(
                    "--checkpoint-interval '{text}': expected a number of epochs (5) or a duration (10s, 500ms, 1m)"
                ))
            })
    }
}

/// Where and how often a streaming job checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Directory or object-store URL.
    pub dir: String,
    /// How often.
    pub interval: CheckpointInterval,
    /// How many checkpoints to keep.
    pub keep: usize,
    /// Ignore (and delete) existing checkpoints.
    pub from_scratch: bool,
}

/// A job's checkpointing: the store and when the next checkpoint is due.
#[derive(Debug)]
pub struct Checkpointer {
    /// Where checkpoints and the epoch log live.
    pub store: CheckpointStore,
    /// How often.
    pub interval: CheckpointInterval,
    /// Ignore existing checkpoints on start.
    pub from_scratch: bool,
    last_epoch: u64,
    last_at: Instant,
}

impl Checkpointer {
    /// Opens the store `config` names.
    ///
    /// # Errors
    /// A bad location.
    pub async fn open(config: &CheckpointConfig) -> Result<Self> {
        Ok(Self {
            store: CheckpointStore::open(&config.dir, config.keep).await?,
            interval: config.interval,
            from_scratch: config.from_scratch,
            last_epoch: 0,
            last_at: Instant::now(),
        })
    }

    /// Whether a checkpoint is due after `epoch` (always at the end of input).
    pub fn due(&self, epoch: u64, finished: bool) -> bool {
        finished
            || match self.interval {
                CheckpointInterval::Epochs(n) => epoch.saturating_sub(self.last_epoch) >= n,
                CheckpointInterval::Every(d) => self.last_at.elapsed() >= d,
            }
    }

    /// The epoch of the last checkpoint written or restored (0: none).
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// Records that checkpoint `epoch` was written.
    pub fn written(&mut self, epoch: u64) {
        self.last_epoch = epoch;
        self.last_at = Instant::now();
    }
}

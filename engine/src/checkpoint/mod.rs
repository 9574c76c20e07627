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
    /// After every epoch, unless micro-batches are cut in under [`LOW_LATENCY_DELAY`]: then
    /// at most once per [`LOW_LATENCY_EVERY`], so checkpoints stay off most epochs' latency
    /// (what a restart replays stays exact: every epoch's input range is logged).
    Auto,
}

/// A `max_delay` under this asks for low latency: [`CheckpointInterval::Auto`] then
/// checkpoints by time.
pub const LOW_LATENCY_DELAY: Duration = Duration::from_millis(100);

/// How often [`CheckpointInterval::Auto`] checkpoints a low-latency pipeline.
pub const LOW_LATENCY_EVERY: Duration = Duration::from_secs(1);

impl CheckpointInterval {
    /// Parses `auto`, `N` (epochs) or a duration such as `10s`, `500ms`, `1m`.
    ///
    /// # Errors
    /// Anything else, or zero.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
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
                    "--checkpoint-interval '{text}': expected auto, a number of epochs (5) or a duration (10s, 500ms, 1m)"
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
    /// Opens the store `config` names, for a job that cuts micro-batches after `max_delay`
    /// (which [`CheckpointInterval::Auto`] reads).
    ///
    /// # Errors
    /// A bad location.
    pub async fn open(config: &CheckpointConfig, max_delay: Duration) -> Result<Self> {
        Ok(Self {
            store: CheckpointStore::open(&config.dir, config.keep).await?,
            interval: match config.interval {
                CheckpointInterval::Auto if max_delay < LOW_LATENCY_DELAY => {
                    CheckpointInterval::Every(LOW_LATENCY_EVERY)
                }
                CheckpointInterval::Auto => CheckpointInterval::Epochs(1),
                interval => interval,
            },
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
                CheckpointInterval::Auto => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn opened(interval: &str, max_delay: Duration) -> Checkpointer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = CheckpointConfig {
            dir: dir.path().to_string_lossy().into_owned(),
            interval: CheckpointInterval::parse(interval).expect("a valid interval"),
            keep: 3,
            from_scratch: false,
        };
        Checkpointer::open(&config, max_delay)
            .await
            .expect("a checkpoint store")
    }

    #[tokio::test]
    async fn auto_checkpoints_every_epoch_unless_batches_are_cut_for_low_latency() {
        let throughput = opened("auto", Duration::from_millis(500)).await;
        assert_eq!(throughput.interval, CheckpointInterval::Epochs(1));
        assert!(throughput.due(1, false));

        let low_latency = opened("AUTO", Duration::from_millis(5)).await;
        assert_eq!(
            low_latency.interval,
            CheckpointInterval::Every(LOW_LATENCY_EVERY)
        );
        assert!(!low_latency.due(1, false), "not right after the last one");
        assert!(low_latency.due(1, true), "always at the end of input");

        let explicit = opened("3", Duration::from_millis(5)).await;
        assert_eq!(explicit.interval, CheckpointInterval::Epochs(3));
        assert!(CheckpointInterval::parse("0").is_err());
        assert!(CheckpointInterval::parse("often").is_err());
    }
}

//! Top-N without a window: `SELECT … FROM (SELECT …, ROW_NUMBER() OVER (PARTITION BY k ORDER
//! BY x DESC) AS rn FROM s) WHERE rn <= N` (and the latest row per key, `rn = 1` by event time
//! descending) over append-only rows. Each partition holds its first N rows (a row outside
//! them can never come back in, since rows are only added); each micro-batch re-ranks the
//! partitions it touched and upserts their ranks, keyed by the PARTITION BY columns and the
//! rank, so a table merged on that key equals batch after every micro-batch.
//!
//! When the PARTITION BY holds an event time (see `closing.rs`), each partition's ranks are
//! final once the watermark passes that time: they are appended then, once, and the partition
//! forgotten. Over an interval join's rows partitioned by the left row's time, this is a
//! point-in-time (as-of) join's latest match per left row, and Nexmark q9's winning bid.

mod closing;
mod operator;
mod plan;
mod rule;
mod state;
#[cfg(test)]
mod tests;

pub use closing::Closing;
pub use plan::TopNPlan;
pub(crate) use state::TopN;
pub use rule::TopNRule;

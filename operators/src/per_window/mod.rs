//! Window functions per closed window: an `OVER (PARTITION BY window_start, … ORDER BY …)`
//! whose PARTITION BY holds the window column of a windowed aggregate or join below. Each
//! window's rows all arrive in the epoch that closes it, so every partition is whole when it
//! arrives: DataFusion's own window operator runs over each epoch's rows, with any ORDER BY
//! and any function (Top-N by `ROW_NUMBER() … WHERE rn <= N`, RANK, NTILE, PERCENT_RANK), and
//! gives the batch answer while holding nothing between epochs.

mod operator;
mod plan;
mod rule;
#[cfg(test)]
mod tests;

pub(crate) use operator::PerWindow;
pub use plan::PerWindowPlan;
pub use rule::PerWindowRule;

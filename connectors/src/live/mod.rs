//! Live tables: the latest row per key of a sink's upserts, held in memory for queries.
//!
//! A sink with a `merge_key` is also a live table; queries over Arrow Flight SQL read
//! immutable [`Snapshot`]s of every table, published together after each epoch.

mod snapshot;
mod table;

#[cfg(test)]
mod tests;

pub use snapshot::{LiveTables, Published, Snapshot, TableSnapshot};
pub use table::LiveTable;

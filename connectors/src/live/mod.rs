//! Live tables: the latest row per key of a sink's upserts, held in memory for queries.
//!
//! A sink with a `merge_key` is also a live table; queries over Arrow Flight SQL read
//! immutable snapshots of it, published together for every table after each epoch.

mod table;

#[cfg(test)]
mod tests;

pub use table::LiveTable;

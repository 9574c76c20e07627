//! Live tables: the latest row per key of a sink's upserts, held in memory for queries.
//!
//! A sink with a `merge_key` is also a live table; a sink without one opts in with
//! `live_retention` (its last N rows, or those of the last duration); queries over Arrow Flight SQL read
//! immutable [`Snapshot`]s of every table, published together after each epoch.

mod retained;
mod set;
mod snapshot;
mod table;

#[cfg(test)]
mod retained_tests;
#[cfg(test)]
mod tests;

pub use retained::{RetainedTable, Retention};
pub use set::{PublishedSet, SnapshotSource};
pub use snapshot::{LiveTables, Published, Snapshot, TableSnapshot};
pub use table::LiveTable;

use arrow::datatypes::SchemaRef;
use volley_sql::TableDecl;

use crate::error::{ConnectorError, Result};

/// Adds sink `table` (of output `schema`) to `live` when it is a live table: keyed by its
/// `merge_key`, or keeping its `live_retention`. Returns whether it was added.
///
/// # Errors
/// A `live_retention` that does not parse, one beside a `merge_key`, and a `MEMORY` table
/// with neither (it would hold nothing).
pub fn add_for_sink(live: &mut LiveTables, table: &TableDecl, schema: SchemaRef) -> Result<bool> {
    let key = table.merge_key().filter(|k| !k.is_empty());
    let retention = table.options.get("live_retention");
    match (key, retention) {
        (Some(_), Some(_)) => Err(ConnectorError::config(
            &table.name,
            "has both 'merge_key' and 'live_retention': a keyed table holds the latest row per key; drop 'live_retention'",
        )),
        (Some(key), None) => {
            live.add(LiveTable::new(&table.name, schema, &key)?)?;
            Ok(true)
        }
        (None, Some(text)) => {
            let retention = Retention::parse(&table.name, text)?;
            live.add_retained(RetainedTable::new(&table.name, schema, retention))?;
            Ok(true)
        }
        (None, None) if table.kind.eq_ignore_ascii_case("MEMORY") => Err(ConnectorError::config(
            &table.name,
            "is STORED AS MEMORY, a table held only for queries: give it a 'merge_key' (the latest row per key) or a 'live_retention' ('10000 rows' or '10 minutes')",
        )),
        (None, None) => Ok(false),
    }
}

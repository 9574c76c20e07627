//! `STORED AS DELTA`: a Delta Lake table (through the `deltalake` crate) as a sink and as a
//! bounded batch input.
//!
//! ```sql
//! CREATE EXTERNAL TABLE demand STORED AS DELTA LOCATION 'out/demand'
//!   OPTIONS ('merge_key' 'zone, window_start', 'partition_by' 'zone', 'compact_every' '50');
//! ```
//!
//! As a sink ([`DeltaSink`]) every epoch is one Delta commit carrying a `txn` action
//! (`appId` = `app_id` option or `<pipeline id>:<table>`, `version` = epoch), so an epoch
//! replayed after a crash is recognised and skipped: effectively-once output. With
//! `merge_key` the commit is a MERGE upsert. The table is created on first use from the
//! query's output columns; an existing table must have the same columns and types.
//!
//! As a bounded input (`volley batch`, or `--input NAME=DIR` where `DIR` holds `_delta_log`)
//! the table is deltalake's DataFusion provider over the latest snapshot. A streaming Delta
//! source is not offered.
//!
//! | option          | meaning                                                          |
//! |-----------------|------------------------------------------------------------------|
//! | `partition_by`  | columns a table created by the sink is partitioned by            |
//! | `app_id`        | application id of the `txn` actions                              |
//! | `compact_every` | compact after every `n` epochs committed with rows (0: never)    |
//! | `refresh`       | a lookup table: how often to look for a newer version            |
//!
//! As a lookup table (no watermark, joined with a stream) the table is read once at one
//! version ([`lookup::read_version`]); with `refresh` the engine looks for a newer version
//! that often and swaps it in between epochs.

mod commit;
mod dedupe;
mod errors;
mod letters;
pub mod lookup;
mod options;
mod sink;
mod table;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use volley_sql::{OptionSpec, TableDecl};

pub use commit::{EPOCH_KEY, PIPELINE_KEY};
pub use letters::{DeltaLetters, SCHEME as DEAD_LETTER_SCHEME, letters_schema};
pub use options::{DELTA_OPTIONS, DeltaOptions};
pub use sink::DeltaSink;

use crate::error::{ConnectorError, Result};
use crate::location::Location;
use crate::traits::{Connector, Sink, SinkContext};

/// The name of the directory holding a Delta table's transaction log.
pub const DELTA_LOG_DIR: &str = "_delta_log";

/// The `DELTA` kind: sink and bounded batch input.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeltaConnector;

#[async_trait]
impl Connector for DeltaConnector {
    /// With a `merge_key`, each epoch is a MERGE upsert.
    fn accepts_updates(&self, table: &TableDecl) -> bool {
        table.merge_key().is_some_and(|k| !k.is_empty())
    }

    fn kind(&self) -> &'static str {
        "DELTA"
    }

    fn options(&self) -> &'static [OptionSpec] {
        DELTA_OPTIONS
    }

    /// The Delta table's columns as its scan yields them; `None` when `LOCATION` holds no
    /// Delta table yet (a sink the first pipeline run will create).
    async fn infer_schema(&self, table: &TableDecl) -> Result<Option<SchemaRef>> {
        DeltaOptions::from_options(&table.options)?;
        let location = Location::resolve(&table.name, &table.location)?;
        let Some(delta) = table::load(&table.name, &location).await? else {
            return Ok(None);
        };
        Ok(Some(
            table::provider(&table.name, &delta, None).await?.schema(),
        ))
    }

    async fn open_sink(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
        context: &SinkContext,
    ) -> Result<Box<dyn Sink>> {
        Ok(Box::new(DeltaSink::open(table, schema, context).await?))
    }

    async fn batch_table(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let location = Location::resolve(&table.name, &table.location)?;
        let delta = table::load(&table.name, &location).await?.ok_or_else(|| {
            ConnectorError::config(
                &table.name,
                format!(
                    "LOCATION '{}' holds no Delta table (no {DELTA_LOG_DIR} with commits)",
                    table.location
                ),
            )
        })?;
        table::provider(&table.name, &delta, Some(&schema)).await
    }
}

#[cfg(test)]
mod tests;

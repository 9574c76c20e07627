//! `STORED AS MEMORY`: a table held only for queries, a live table and nothing else. Rows
//! sent to it are kept as its `merge_key` (the latest row per key) or `live_retention` (the
//! last rows) says, and queried over Arrow Flight SQL; nothing is written anywhere.
//!
//! ```sql
//! CREATE EXTERNAL TABLE surge_now STORED AS MEMORY LOCATION 'surge_now'
//! OPTIONS ('merge_key' 'geohash6');
//! CREATE EXTERNAL TABLE recent_rides STORED AS MEMORY LOCATION 'recent_rides'
//! OPTIONS ('live_retention' '10000 rows');
//! ```

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use volley_sql::{OptionSpec, TableDecl};

use crate::blackhole::BlackholeSink;
use crate::error::Result;
use crate::traits::{Connector, Sink, SinkContext};

/// The `MEMORY` kind: sink only; what it holds lives in the process's live tables.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryConnector;

#[async_trait]
impl Connector for MemoryConnector {
    /// A keyed memory table holds the latest row per key: updates fit.
    fn accepts_updates(&self, table: &TableDecl) -> bool {
        table.merge_key().is_some_and(|k| !k.is_empty())
    }

    fn kind(&self) -> &'static str {
        "MEMORY"
    }

    fn options(&self) -> &'static [OptionSpec] {
        &[]
    }

    async fn open_sink(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
        _context: &SinkContext,
    ) -> Result<Box<dyn Sink>> {
        let _ = (table, schema);
        // The rows are the live table's (kept by the epoch loop); the sink itself keeps none.
        Ok(Box::new(BlackholeSink::new()))
    }
}

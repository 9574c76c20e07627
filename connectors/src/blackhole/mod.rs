//! `STORED AS BLACKHOLE`: a sink that counts rows and keeps nothing, for benchmarks and dry runs.
//!
//! ```sql
//! CREATE EXTERNAL TABLE discard STORED AS BLACKHOLE LOCATION '';
//! ```

mod sink;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use volley_sql::{OptionSpec, TableDecl};

pub use sink::BlackholeSink;

use crate::error::Result;
use crate::traits::{Connector, Sink, SinkContext};

/// The `BLACKHOLE` kind: sink only, no options.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlackholeConnector;

#[async_trait]
impl Connector for BlackholeConnector {
    /// Keeps nothing, so any result fits; a `merge_key` still says which columns identify a row.
    fn accepts_updates(&self, table: &TableDecl) -> bool {
        table.merge_key().is_some_and(|k| !k.is_empty())
    }

    fn kind(&self) -> &'static str {
        "BLACKHOLE"
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
        Ok(Box::new(BlackholeSink::new()))
    }
}

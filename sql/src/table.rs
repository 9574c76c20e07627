//! A table declared with `CREATE EXTERNAL TABLE`: its kind, location, schema and options.

use std::time::Duration;

use arrow::datatypes::SchemaRef;

use crate::error::{Result, StatementRef};
use crate::options::{OptionSpec, TableOptions};
use crate::watermark::WatermarkSpec;

/// Default micro-batch row bound when a source sets no `max_rows`.
pub const DEFAULT_MAX_ROWS: usize = 65_536;
/// Default micro-batch time bound when a source sets no `max_delay`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Default `idle_timeout`: how long a source partition may go without data before the
/// watermark stops waiting for it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pipeline says about one table.
#[derive(Debug, Clone)]
pub struct TableDecl {
    /// Table name as used in queries (lower-cased unless quoted).
    pub name: String,
    /// The `STORED AS` kind, upper-cased (`GENERATOR`, `PARQUET`, …).
    pub kind: String,
    /// The `LOCATION`, as written.
    pub location: String,
    /// Columns declared in the statement, if any.
    pub declared_schema: Option<SchemaRef>,
    /// Validated options.
    pub options: TableOptions,
    /// The event-time column and bound on disorder, from the `watermark` option.
    pub watermark: Option<WatermarkSpec>,
    /// Where the table was declared.
    pub at: StatementRef,
}

impl TableDecl {
    /// Rows per micro-batch (`max_rows`), or the default.
    ///
    /// # Errors
    /// A bad `max_rows` value.
    pub fn max_rows(&self) -> Result<usize> {
        Ok(self
            .options
            .get_positive("max_rows")?
            .map_or(DEFAULT_MAX_ROWS, |n| n as usize))
    }

    /// Longest wait before a micro-batch is cut (`max_delay`), or the default.
    ///
    /// # Errors
    /// A bad `max_delay` value.
    pub fn max_delay(&self) -> Result<Duration> {
        Ok(self
            .options
            .get_duration("max_delay")?
            .unwrap_or(DEFAULT_MAX_DELAY))
    }

    /// How long a partition may be silent before the watermark leaves it out (`idle_timeout`).
    ///
    /// # Errors
    /// A bad `idle_timeout` value.
    pub fn idle_timeout(&self) -> Result<Duration> {
        Ok(self
            .options
            .get_duration("idle_timeout")?
            .unwrap_or(DEFAULT_IDLE_TIMEOUT))
    }

    /// A sink's `state_ttl`: how long (in event time) a keyed aggregate writing into it keeps a
    /// group that is not updated.
    ///
    /// # Errors
    /// A bad `state_ttl` value.
    pub fn state_ttl(&self) -> Result<Option<Duration>> {
        self.options.get_duration("state_ttl")
    }

    /// A sink's `allowed_lateness`: how long a windowed aggregate writing into it keeps each
    /// window after emitting it, to correct it with late rows.
    ///
    /// # Errors
    /// A bad `allowed_lateness` value.
    pub fn allowed_lateness(&self) -> Result<Option<Duration>> {
        self.options.get_duration("allowed_lateness")
    }

    /// The `merge_key` columns, if declared.
    pub fn merge_key(&self) -> Option<Vec<String>> {
        self.options.get_list("merge_key")
    }
}

/// The kinds of table that exist, and the options each accepts.
///
/// Implemented by the connector registry; `sql` uses it to validate `CREATE EXTERNAL TABLE`
/// without depending on any connector.
pub trait KindCatalog: Send + Sync {
    /// The options `kind` accepts beyond [`crate::options::COMMON_OPTIONS`], or `None` if the
    /// kind does not exist.
    fn kind_options(&self, kind: &str) -> Option<&'static [OptionSpec]>;
    /// All kinds, for error messages.
    fn kinds(&self) -> Vec<&'static str>;
}

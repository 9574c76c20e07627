//! `STORED AS GENERATOR`: built-in deterministic synthetic streams.
//!
//! ```sql
//! CREATE EXTERNAL TABLE ride_requests STORED AS GENERATOR LOCATION 'rides'
//! OPTIONS ('count' '1000000', 'rate' '5000', 'disorder' '5 seconds', 'seed' '7');
//! ```
//!
//! `LOCATION` names the generator. `rides` yields ride requests
//! (`request_id`, `rider_id`, `lat`, `lon`, `event_time`) with ~80% of events in 5 hot cities.
//! `payments` yields card payments (`payment_id`, `user_id`, `merchant`, `amount`, `fee`,
//! `approved`, `channel`, `event_time`) that hold what real data holds: NULLs in every nullable
//! column, NaN, ±0.0 and ±inf amounts, hot users, duplicate times and rows on window edges.
//! `nexmark` yields one table of the Nexmark benchmark, chosen by option `events` (`person`,
//! `auction` or `bid`); `count` counts events of all three, so tables declared with the same
//! options are one consistent event stream.
//! Row `i` depends only on the options and `i`, so any range replays exactly.

mod nexmark;
mod options;
mod payments;
mod rides;
mod source;

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use volley_sql::{OptionSpec, TableDecl};

pub use nexmark::{NexmarkTable, generate_nexmark};
pub use options::{
    DEFAULT_START_NANOS, GENERATOR_OPTIONS, GeneratorOptions, GeneratorStream, Pace,
};
pub use payments::{generate_payments, payments_schema};
pub use rides::{generate_rides, rides_schema};
pub use source::GeneratorSource;

use crate::error::{ConnectorError, Result};
use crate::traits::{Connector, Source};

/// Rows `[start, end)` of the stream `opts` names.
pub fn generate(opts: &GeneratorOptions, start: u64, end: u64) -> RecordBatch {
    match opts.stream {
        GeneratorStream::Rides => generate_rides(opts, start, end),
        GeneratorStream::Payments => generate_payments(opts, start, end),
        GeneratorStream::Nexmark(table) => generate_nexmark(opts, table, opts.seed, start, end),
    }
}

/// Rows per batch when a generator is materialised for batch mode.
const BATCH_ROWS: u64 = 8192;

/// The `GENERATOR` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeneratorConnector;

impl GeneratorConnector {
    /// Checks the table names a known generator and reads its options.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] for an unknown generator or a bad option.
    pub fn options(table: &TableDecl) -> Result<GeneratorOptions> {
        if table.location.trim().eq_ignore_ascii_case("nexmark") {
            return Self::nexmark_options(table);
        }
        if table.options.get("events").is_some() {
            return Err(ConnectorError::config(
                &table.name,
                "option 'events' is for LOCATION 'nexmark' only",
            ));
        }
        let Some(stream) = GeneratorStream::from_location(&table.location) else {
            let names: Vec<&str> = GeneratorStream::ALL
                .iter()
                .map(|(n, _)| *n)
                .chain(["nexmark"])
                .collect();
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "unknown generator LOCATION '{}'; allowed generators: {}",
                    table.location,
                    names.join(", ")
                ),
            ));
        };
        Ok(GeneratorOptions {
            stream,
            ..GeneratorOptions::from_options(&table.options)?
        })
    }
}

impl GeneratorConnector {
    /// The options of a `LOCATION 'nexmark'` table: `events` names the table, `count` counts
    /// events of the whole mix, `seed` is the first event id (0, the standard, unless
    /// given). Options Nexmark has no use for are refused rather than ignored.
    fn nexmark_options(table: &TableDecl) -> Result<GeneratorOptions> {
        let names: Vec<&str> = NexmarkTable::ALL.iter().map(|(n, _)| *n).collect();
        let Some(events) = table.options.get("events") else {
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "LOCATION 'nexmark' needs option 'events': one of {}",
                    names.join(", ")
                ),
            ));
        };
        let Some(kind) = NexmarkTable::from_name(events) else {
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "option 'events' = '{events}' is invalid: expected one of {}",
                    names.join(", ")
                ),
            ));
        };
        for unused in ["disorder", "riders", "cities"] {
            if table.options.get(unused).is_some() {
                return Err(ConnectorError::config(
                    &table.name,
                    format!(
                        "option '{unused}' has no meaning for LOCATION 'nexmark' (its events come in order, with the standard populations)"
                    ),
                ));
            }
        }
        let opts = GeneratorOptions::from_options(&table.options)?;
        if opts.rate < 1.0 || opts.rate.fract() != 0.0 {
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "option 'rate' = '{}' is invalid for LOCATION 'nexmark': expected a whole number of events per second, at least 1",
                    opts.rate
                ),
            ));
        }
        Ok(GeneratorOptions {
            stream: GeneratorStream::Nexmark(kind),
            count: opts.count.map(|events| kind.rows_among(events)),
            seed: table.options.get_u64("seed")?.unwrap_or(0),
            ..opts
        })
    }
}

#[async_trait]
impl Connector for GeneratorConnector {
    fn kind(&self) -> &'static str {
        "GENERATOR"
    }

    fn options(&self) -> &'static [OptionSpec] {
        GENERATOR_OPTIONS
    }

    async fn infer_schema(&self, table: &TableDecl) -> Result<Option<SchemaRef>> {
        Ok(Some(Self::options(table)?.stream.schema()))
    }

    async fn open_source(&self, table: &TableDecl, schema: SchemaRef) -> Result<Box<dyn Source>> {
        let opts = Self::options(table)?;
        check_schema(table, &schema, opts.stream)?;
        Ok(Box::new(GeneratorSource::new(opts, schema)))
    }

    async fn batch_table(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let opts = Self::options(table)?;
        check_schema(table, &schema, opts.stream)?;
        let Some(count) = opts.count else {
            return Err(ConnectorError::config(
                &table.name,
                "a GENERATOR used as a bounded input needs a 'count' option",
            ));
        };
        let partitions = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let per_partition = count.div_ceil(partitions).max(1);
        let mut batches_by_partition = Vec::new();
        for first in (0..count).step_by(usize::try_from(per_partition).unwrap_or(usize::MAX)) {
            let last = (first + per_partition).min(count);
            let mut batches = Vec::new();
            for start in (first..last).step_by(BATCH_ROWS as usize) {
                let batch = generate(&opts, start, (start + BATCH_ROWS).min(last));
                batches.push(
                    RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(
                        |e| ConnectorError::Internal(format!("table '{}': {e}", table.name)),
                    )?,
                );
            }
            batches_by_partition.push(batches);
        }
        Ok(Arc::new(MemTable::try_new(schema, batches_by_partition)?))
    }
}

/// The declared (or passed) schema must have the generator's column names and types, in order.
fn check_schema(table: &TableDecl, schema: &Schema, stream: GeneratorStream) -> Result<()> {
    let expected = stream.schema();
    let declared = table.declared_schema.iter().map(|s| s.as_ref());
    for candidate in declared.chain(std::iter::once(schema)) {
        let same = candidate.fields().len() == expected.fields().len()
            && candidate
                .fields()
                .iter()
                .zip(expected.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "the declared columns ({}) do not match the '{}' generator's columns ({}); \
                     declare exactly these columns, or none",
                    describe(candidate),
                    table.location.trim(),
                    describe(&expected)
                ),
            ));
        }
    }
    Ok(())
}

fn describe(schema: &Schema) -> String {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    columns.join(", ")
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};
    use datafusion::prelude::SessionContext;
    use tokio::time::Instant;
    use volley_sql::{StatementRef, TableOptions};

    use super::*;
    use crate::traits::SourcePoll;

    fn decl(location: &str, options: &[(&str, &str)], declared: Option<SchemaRef>) -> TableDecl {
        TableDecl {
            name: "ride_requests".to_string(),
            kind: "GENERATOR".to_string(),
            location: location.to_string(),
            declared_schema: declared,
            options: TableOptions::unchecked(
                "ride_requests",
                options.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            watermark: None,
            at: StatementRef::default(),
        }
    }

    #[tokio::test]
    async fn unknown_generator_lists_allowed() {
        let err = GeneratorConnector
            .infer_schema(&decl("taxis", &[], None))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ride_requests") && err.contains("taxis") && err.contains("rides"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn declared_schema_must_match() {
        let wrong = Arc::new(Schema::new(vec![Field::new(
            "request_id",
            DataType::Utf8,
            false,
        )]));
        let table = decl("rides", &[], Some(wrong.clone()));
        let err = GeneratorConnector
            .open_source(&table, wrong)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ride_requests") && err.contains("request_id"),
            "{err}"
        );

        // Same names and types but nullable columns are accepted, and batches carry that schema.
        let nullable = Arc::new(Schema::new(
            rides_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let table = decl("rides", &[("count", "3")], Some(nullable.clone()));
        let mut source = GeneratorConnector
            .open_source(&table, nullable.clone())
            .await
            .unwrap();
        let SourcePoll::Data(batch) = source.poll_batch(10, Instant::now()).await.unwrap() else {
            panic!("expected rows");
        };
        assert_eq!(batch.schema(), nullable);
        assert_eq!(batch.num_rows(), 3);
    }

    #[tokio::test]
    async fn batch_table_needs_count_and_holds_every_row() {
        let err = GeneratorConnector
            .batch_table(&decl("rides", &[], None), rides_schema())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs a 'count' option") && err.contains("ride_requests"),
            "{err}"
        );

        let table = decl("rides", &[("count", "20000"), ("seed", "5")], None);
        let provider = GeneratorConnector
            .batch_table(&table, rides_schema())
            .await
            .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("rides", provider).unwrap();
        let batches = ctx
            .sql("SELECT count(*), count(DISTINCT request_id), min(request_id), max(request_id) FROM rides")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            text.contains("| 20000 ") && text.contains("| 19999 "),
            "{text}"
        );
    }
}

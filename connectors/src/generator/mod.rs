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

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use volley_sql::{OptionSpec, TableDecl};

use crate::types::sql_type_name;

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
                batches.push(conform(batch, &schema)?);
            }
            batches_by_partition.push(batches);
        }
        Ok(Arc::new(MemTable::try_new(schema, batches_by_partition)?))
    }
}

/// The declared (or passed) schema must have the generator's column names, in order, each of
/// its type or of a type its values convert to exactly ([`converts_exactly`]), and NOT NULL
/// only where the generator never writes a NULL.
fn check_schema(table: &TableDecl, schema: &Schema, stream: GeneratorStream) -> Result<()> {
    let expected = stream.schema();
    let declared = table.declared_schema.iter().map(|s| s.as_ref());
    for candidate in declared.chain(std::iter::once(schema)) {
        let names_match = candidate.fields().len() == expected.fields().len()
            && candidate
                .fields()
                .iter()
                .zip(expected.fields())
                .all(|(a, b)| a.name() == b.name());
        if !names_match {
            return Err(ConnectorError::config(
                &table.name,
                format!(
                    "the declared columns ({}) do not match the '{}' generator's columns ({}); \
                     declare exactly these columns, in this order, or none",
                    describe(candidate),
                    table.location.trim(),
                    describe(&expected)
                ),
            ));
        }
        for (declared, made) in candidate.fields().iter().zip(expected.fields()) {
            if !converts_exactly(made.data_type(), declared.data_type()) {
                return Err(ConnectorError::config(
                    &table.name,
                    format!(
                        "column '{}' is declared {} but the '{}' generator makes {} values: \
                         declare it {}",
                        declared.name(),
                        sql_type_name(declared.data_type()),
                        table.location.trim(),
                        sql_type_name(made.data_type()),
                        allowed(made.data_type())
                    ),
                ));
            }
            if !declared.is_nullable() && made.is_nullable() {
                return Err(ConnectorError::config(
                    &table.name,
                    format!(
                        "column '{}' is declared NOT NULL but the '{}' generator writes NULLs in it: \
                         declare it without NOT NULL",
                        declared.name(),
                        table.location.trim()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether every value of type `from` converts to `to` exactly: the same type, text as any
/// string type, a narrower integer or float to a wider one, an integer to a DOUBLE that holds
/// it (up to 32 bits), a decimal to one with as many digits on each side of the point.
fn converts_exactly(from: &DataType, to: &DataType) -> bool {
    use DataType::{
        Decimal128, Float32, Float64, Int8, Int16, Int32, Int64, LargeUtf8, Utf8, Utf8View,
    };
    let rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        _ => None,
    };
    match (from, to) {
        _ if from == to => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Float32, Float64) => true,
        (Int8 | Int16 | Int32, Float64) => true,
        (Decimal128(p, s), Decimal128(p2, s2)) => {
            s2 >= s && i16::from(*p2) - i16::from(*s2) >= i16::from(*p) - i16::from(*s)
        }
        _ => matches!((rank(from), rank(to)), (Some(a), Some(b)) if a <= b),
    }
}

/// The declarations [`converts_exactly`] accepts for a column the generator makes as `made`.
fn allowed(made: &DataType) -> String {
    let name = sql_type_name(made);
    match made {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            "VARCHAR (or TEXT, STRING)".to_string()
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            format!("{name}, a wider integer or DOUBLE")
        }
        DataType::Int64 => name,
        DataType::Float32 => format!("{name} or DOUBLE"),
        DataType::Decimal128(..) => {
            format!("{name}, or a DECIMAL with at least as many digits before and after the point")
        }
        _ => name,
    }
}

/// `batch` (the generator's columns) as rows of `schema`: each column cast to its declared
/// type, which [`check_schema`] allowed.
pub(crate) fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .and_then(|columns| RecordBatch::try_new(Arc::clone(schema), columns))
        .map_err(|e| {
            ConnectorError::Internal(format!(
                "generator batch does not fit the table schema: {e}"
            ))
        })?;
    Ok(columns)
}

fn describe(schema: &Schema) -> String {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type())))
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

    /// `payments` declared with the types SQL gives `VARCHAR`, `DECIMAL(12, 2)` and `BIGINT`.
    fn payments_as_sql_declares(fee: DataType, user_id_nullable: bool) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("payment_id", DataType::Int64, false),
            Field::new("user_id", DataType::Int64, user_id_nullable),
            Field::new("merchant", DataType::Utf8View, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("fee", fee, true),
            Field::new("approved", DataType::Boolean, true),
            Field::new("channel", DataType::Int64, true),
            Field::new(
                "event_time",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
                false,
            ),
        ]))
    }

    #[tokio::test]
    async fn generator_columns_may_be_declared_with_the_natural_sql_types() {
        let declared = payments_as_sql_declares(DataType::Decimal128(12, 2), true);
        let table = decl("payments", &[("count", "500")], Some(declared.clone()));
        let mut source = GeneratorConnector
            .open_source(&table, declared.clone())
            .await
            .unwrap();
        let SourcePoll::Data(batch) = source.poll_batch(500, Instant::now()).await.unwrap() else {
            panic!("expected rows");
        };
        assert_eq!(batch.schema(), declared);
        let opts = GeneratorConnector::options(&table).unwrap();
        let made = generate(&opts, 0, 500);
        for (i, column) in batch.columns().iter().enumerate() {
            let back = arrow::compute::cast(column, made.schema().field(i).data_type()).unwrap();
            assert_eq!(
                &back,
                made.column(i),
                "column {i} holds the generator's values"
            );
        }
        assert!(
            made.column(2).null_count() > 0,
            "merchant has NULLs to carry"
        );

        // A type that would change values, or NOT NULL over NULLs, is refused by name.
        for (schema, column, says) in [
            (
                payments_as_sql_declares(DataType::Decimal128(10, 1), true),
                "'fee'",
                "DECIMAL",
            ),
            (
                payments_as_sql_declares(DataType::Int64, true),
                "'fee'",
                "declare it DECIMAL(10, 2)",
            ),
            (
                payments_as_sql_declares(DataType::Decimal128(10, 2), false),
                "'user_id'",
                "NOT NULL",
            ),
        ] {
            let table = decl("payments", &[("count", "5")], Some(schema.clone()));
            let err = GeneratorConnector
                .open_source(&table, schema)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(column) && err.contains(says), "{err}");
        }
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

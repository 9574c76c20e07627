//! A small kit for operator tests: one INSERT over one source, fed epoch by epoch from small
//! text tables with watermarks between them, showing what it emits, so an operator's test
//! reads like its data.
//!
//! ```text
//! ts                  | user | amount
//! 2026-01-01T00:00:01 | a    | 1.5
//! 2026-01-01T00:00:04 | b    | NULL
//! ```
//!
//! A table's first line names the source's columns (any order, any subset: the others are
//! NULL); each cell is cast from its text to the column's type (`NULL` is a NULL). The
//! watermark after an epoch is the source's, in the event-time column's text form; what the
//! INSERT emits comes back as a table of the same form, its lines sorted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use volley_sql::options::OptionSpec;
use volley_sql::stream::operator::RestoredState;
use volley_sql::stream::{EpochSlot, SourceBinding, StreamPlanner};
use volley_sql::{KindCatalog, Pipeline};

use crate::runner::QueryRunner;

/// What goes wrong in a kit: the test's SQL or tables, or the operator.
pub type KitError = Box<dyn std::error::Error + Send + Sync>;

/// A kit's result.
pub type Result<T> = std::result::Result<T, KitError>;

/// The table kinds a kit's SQL declares: its source (`CSV`, never read) and its sink.
struct KitCatalog;

impl KindCatalog for KitCatalog {
    fn kind_options(&self, kind: &str) -> Option<&'static [OptionSpec]> {
        matches!(kind, "CSV" | "BLACKHOLE").then_some(&[])
    }

    fn kinds(&self) -> Vec<&'static str> {
        vec!["CSV", "BLACKHOLE"]
    }
}

/// One INSERT over one source named `s`, run epoch by epoch.
#[derive(Debug)]
pub struct Kit {
    /// `new`'s arguments, to plan the INSERT again on `restart`.
    planned: (String, String, String, usize),
    runner: QueryRunner,
    slot: Arc<EpochSlot>,
    schema: SchemaRef,
    watermark: Option<i64>,
}

impl Kit {
    /// Plans `select` over a source `s` with `columns` (SQL, as in CREATE EXTERNAL TABLE) and
    /// `watermark` (the option's text, such as `ts - INTERVAL '1 second'`), as `workers` would
    /// run it.
    ///
    /// # Errors
    /// The SQL's errors, as `volley` reports them.
    pub async fn new(columns: &str, watermark: &str, select: &str, workers: usize) -> Result<Self> {
        let sql = format!(
            "CREATE EXTERNAL TABLE s ({columns}) STORED AS CSV LOCATION 'kit.csv'
               OPTIONS ('watermark' '{}');
             CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'kit';
             INSERT INTO out {select};",
            watermark.replace('\'', "''")
        );
        let pipeline = Pipeline::parse(&sql, &KitCatalog).await?;
        let table = pipeline
            .table("s")
            .ok_or("the kit's source is not declared")?;
        let schema = table
            .declared_schema
            .clone()
            .ok_or("the kit's source has no columns")?;
        let slot = EpochSlot::new();
        let planner = StreamPlanner::new(vec![SourceBinding {
            name: "s".into(),
            schema: Arc::clone(&schema),
            watermark: table.watermark.clone(),
            slot: Arc::clone(&slot),
        }])?
        .with_rules(crate::rules())
        .with_workers(workers);
        let insert = pipeline
            .inserts
            .first()
            .ok_or("the kit's INSERT is missing")?;
        let plan = planner.plan_insert(insert, None, None).await?;
        let runner = QueryRunner::new(plan, planner.context().task_ctx())?;
        Ok(Self {
            planned: (columns.into(), watermark.into(), select.into(), workers),
            runner,
            slot,
            schema,
            watermark: None,
        })
    }

    /// Runs one epoch over the rows of `table`, then advances the source's watermark to
    /// `watermark` (event-time text; `None`: where it was). Returns what the INSERT emitted.
    ///
    /// # Errors
    /// A cell that does not cast to its column's type; execution failures.
    pub async fn epoch(&mut self, table: &str, watermark: Option<&str>) -> Result<String> {
        let batch = self.parse(table)?;
        if let Some(text) = watermark {
            self.watermark = Some(nanos(text)?);
        }
        self.slot.set(vec![batch]);
        let out = self.run(false).await;
        self.slot.clear();
        out
    }

    /// Runs one epoch over `batch` (the source's columns), then advances the source's
    /// watermark to `watermark` (nanoseconds). Returns how many rows the INSERT emitted.
    ///
    /// # Errors
    /// Execution failures.
    pub async fn epoch_batch(&mut self, batch: RecordBatch, watermark: i64) -> Result<usize> {
        self.watermark = Some(watermark);
        self.slot.set(vec![batch]);
        let watermarks = HashMap::from([("s".to_string(), self.watermark)]);
        let parts = self.runner.run_epoch(true, &watermarks, false).await;
        self.slot.clear();
        Ok(parts?
            .iter()
            .flat_map(|p| &p.rows)
            .map(RecordBatch::num_rows)
            .sum())
    }

    /// Checkpoints every operator, plans the INSERT again and restores the new operators
    /// from the checkpoint, as a restarted job does.
    ///
    /// # Errors
    /// Snapshot or restore failures.
    pub async fn restart(&mut self) -> Result<()> {
        let (columns, watermark, select, workers) = self.planned.clone();
        let mut fresh = Self::new(&columns, &watermark, &select, workers).await?;
        let mut saved = Vec::new();
        for (id, operator) in self.runner.operators_by_id() {
            let snapshot = operator.snapshot()?;
            let pieces = snapshot
                .pieces
                .into_iter()
                .map(|p| Ok((p.name, through_file(&p.schema, &p.rows)?)))
                .collect::<Result<_>>()?;
            let state = RestoredState {
                marks: snapshot.marks,
                pieces,
                watermark: self.watermark,
            };
            saved.push((id.to_string(), state));
        }
        for (id, state) in saved {
            fresh.runner.restore(&id, state).await?;
        }
        fresh.watermark = self.watermark;
        *self = fresh;
        Ok(())
    }

    /// The source's schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The INSERT's runner (its operators' state, for tests of what they hold).
    pub fn runner(&self) -> &QueryRunner {
        &self.runner
    }

    /// Ends the input: everything the INSERT still holds is emitted.
    ///
    /// # Errors
    /// Execution failures.
    pub async fn finish(&mut self) -> Result<String> {
        self.watermark = Some(i64::MAX);
        self.run(true).await
    }

    async fn run(&mut self, all_done: bool) -> Result<String> {
        let watermarks = HashMap::from([("s".to_string(), self.watermark)]);
        let parts = self
            .runner
            .run_epoch(!all_done, &watermarks, all_done)
            .await?;
        let rows: Vec<RecordBatch> = parts.into_iter().flat_map(|p| p.rows).collect();
        show(&rows)
    }

    fn parse(&self, table: &str) -> Result<RecordBatch> {
        let bad = |what: String| -> KitError { format!("kit table: {what}").into() };
        let mut lines = table.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(header) = lines.next() else {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        };
        let names: Vec<&str> = header.split('|').map(str::trim).collect();
        let rows: Vec<Vec<&str>> = lines
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let Some(at) = names.iter().position(|n| n == field.name()) else {
                columns.push(new_null_array(field.data_type(), rows.len()));
                continue;
            };
            let text: StringArray = rows
                .iter()
                .map(|r| r.get(at).copied().filter(|c| *c != "NULL"))
                .collect();
            let cast = arrow::compute::cast(&text, field.data_type())
                .map_err(|e| bad(format!("column '{}': {e}", field.name())))?;
            if cast.null_count() != text.null_count() {
                return Err(bad(format!(
                    "column '{}' holds text that is not {}",
                    field.name(),
                    field.data_type()
                )));
            }
            columns.push(cast);
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| bad(e.to_string()))
    }
}

/// Event-time text (`2026-01-01T00:00:10`) in nanoseconds.
/// `rows` written to an Arrow IPC file and read back, as a checkpoint stores them.
fn through_file(schema: &SchemaRef, rows: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let mut bytes = Vec::new();
    let mut writer = arrow::ipc::writer::FileWriter::try_new(&mut bytes, schema)?;
    for batch in rows {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)?;
    Ok(reader.collect::<std::result::Result<_, _>>()?)
}

fn nanos(text: &str) -> Result<i64> {
    let cast = arrow::compute::cast(
        &StringArray::from(vec![text]),
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
    )
    .map_err(|e| format!("kit watermark '{text}': {e}"))?;
    cast.as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()
        .filter(|a| a.is_valid(0))
        .map(|a| a.value(0))
        .ok_or_else(|| format!("kit watermark '{text}' is not a time").into())
}

/// `rows` as a text table: a header of column names, then one sorted line per row.
fn show(rows: &[RecordBatch]) -> Result<String> {
    let Some(first) = rows.first() else {
        return Ok(String::new());
    };
    let header: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in rows {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            lines.push(cells.join(" | "));
        }
    }
    lines.sort();
    Ok(format!("{}\n{}\n", header.join(" | "), lines.join("\n")))
}

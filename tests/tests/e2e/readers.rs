//! Reading what a `volley run` left in its sinks: files and Delta tables through Volley's own
//! readers, and Delta tables through independent ones (Python `deltalake` and DuckDB's delta
//! extension, via `tests/py/read_delta.py`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::SessionContext;
use volley_connectors::Connector;
use volley_connectors::delta::DeltaConnector;
use volley_connectors::files::{FileFormat, read_sink_dir};
use volley_sql::{Pipeline, TableDecl};

/// `batches` with exactly `schema`'s columns, picked by name and cast to its types.
pub fn conform(schema: &SchemaRef, batches: &[RecordBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    let column = b
                        .column_by_name(f.name())
                        .unwrap_or_else(|| panic!("no column {} in {:?}", f.name(), b.schema()));
                    cast(column, f.data_type()).unwrap()
                })
                .collect();
            RecordBatch::try_new(Arc::clone(schema), columns).unwrap()
        })
        .collect()
}

/// `schema` as a Delta table stores it: Delta timestamps have microsecond precision, so
/// nanosecond timestamp columns become microsecond ones (everything else is unchanged).
pub fn delta_stored(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The table `name` of `pipeline`, with its relative `LOCATION` resolved against `dir`.
pub fn table_in(pipeline: &Pipeline, name: &str, dir: &Path) -> TableDecl {
    let mut table = pipeline.table(name).unwrap().clone();
    table.location = dir.join(&table.location).display().to_string();
    table
}

/// Every row of a sink as Volley's readers see it (file parts in epoch order; a Delta
/// table's latest snapshot), cast to `schema`.
pub async fn sink_rows(table: &TableDecl, schema: &SchemaRef) -> Vec<RecordBatch> {
    let batches = match table.kind.as_str() {
        "DELTA" => {
            let provider = DeltaConnector
                .batch_table(table, Arc::clone(schema))
                .await
                .unwrap();
            SessionContext::new()
                .read_table(provider)
                .unwrap()
                .collect()
                .await
                .unwrap()
        }
        "PARQUET" => read_sink_dir(&table.location, FileFormat::Parquet)
            .await
            .unwrap(),
        other => panic!("no reader for {other} sinks here"),
    };
    conform(schema, &batches)
}

/// What the independent readers found in one Delta table.
#[derive(Debug)]
pub struct IndependentRead {
    /// Rows as Python `deltalake` read them.
    pub deltalake: Vec<RecordBatch>,
    /// Rows as DuckDB's `delta_scan` read them.
    pub duckdb: Vec<RecordBatch>,
    /// The txn version Python `deltalake` reports for the sink's app id.
    pub txn_version: Option<i64>,
    /// Every `txn` action's (appId, version), in log order.
    pub txn_actions: Vec<(String, i64)>,
}

/// The Python with the test readers installed (`.ci/run` sets `VOLLEY_PYTHON`). `None` outside
/// CI when it is not set up; in CI (`CI=true`) a missing interpreter fails the test.
pub fn python() -> Option<PathBuf> {
    ci_env("VOLLEY_PYTHON", "the Python test readers").map(PathBuf::from)
}

/// The value of `name`, which `.ci/run` sets up (`what` it provides). Outside CI a missing
/// value skips the caller's checks with a note; with `CI=true` it fails the test.
pub fn ci_env(name: &str, what: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {name} is not set: .ci/run sets up {what}")
        }
        Err(_) => {
            eprintln!(
                "{name} is not set: skipping checks that need {what} (bash .ci/run sets it up)"
            );
            None
        }
    }
}

fn read_parquet(path: &Path, schema: &SchemaRef) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    conform(schema, &batches)
}

/// Reads the Delta table at `table_dir` with Python `deltalake` and DuckDB.
pub fn independent_read(
    python: &Path,
    table_dir: &Path,
    app_id: &str,
    schema: &SchemaRef,
) -> IndependentRead {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/read_delta.py");
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(python)
        .arg(&script)
        .arg(table_dir)
        .arg(out.path())
        .arg(app_id)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let deltalake = read_parquet(&out.path().join("deltalake.parquet"), schema);
    let duckdb = read_parquet(&out.path().join("duckdb.parquet"), schema);
    let count = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
    assert_eq!(report["rows_deltalake"].as_u64(), Some(count(&deltalake)));
    assert_eq!(report["rows_duckdb"].as_u64(), Some(count(&duckdb)));
    let txn_actions = report["txn_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["appId"].as_str().unwrap().to_string(),
                t["version"].as_i64().unwrap(),
            )
        })
        .collect();
    IndependentRead {
        deltalake,
        duckdb,
        txn_version: report["txn_version"].as_i64(),
        txn_actions,
    }
}

//! Delta sink and batch-input behaviour against real tables in temporary directories.

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionContext, col};
use serde_json::Value;
use volley_sql::{StatementRef, TableOptions};

use super::*;
use crate::generator::{GeneratorOptions, generate_rides, rides_schema};
use crate::registry::ConnectorRegistry;

const PIPELINE: &str = "demand-pipeline";

fn decl(location: &Path, options: &[(&str, &str)]) -> TableDecl {
    decl_named("fares", location.to_str().unwrap(), options, None)
}

fn decl_named(
    name: &str,
    location: &str,
    options: &[(&str, &str)],
    declared: Option<SchemaRef>,
) -> TableDecl {
    TableDecl {
        name: name.to_string(),
        kind: "DELTA".to_string(),
        location: location.to_string(),
        declared_schema: declared,
        options: TableOptions::unchecked(
            name,
            options.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        ),
        watermark: None,
        at: StatementRef::default(),
    }
}

fn context() -> SinkContext {
    SinkContext::new(PIPELINE)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("zone", DataType::Utf8, false),
        Field::new("fare", DataType::Float64, true),
    ]))
}

/// One batch of `(id, zone, fare)` rows.
fn fares(rows: &[(i64, &str, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

async fn open(table: &TableDecl) -> Box<dyn Sink> {
    DeltaConnector
        .open_sink(table, schema(), &context())
        .await
        .unwrap()
}

/// Every row of the table through the connector's batch provider, sorted by id.
async fn read_back(table: &TableDecl) -> Vec<(i64, String, f64)> {
    let provider = DeltaConnector.batch_table(table, schema()).await.unwrap();
    let batches = SessionContext::new()
        .read_table(provider)
        .unwrap()
        .sort(vec![
            col("id").sort(true, false),
            col("zone").sort(true, false),
        ])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for batch in batches {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let zones = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let fares = batch
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        for i in 0..batch.num_rows() {
            out.push((ids.value(i), zones.value(i).to_string(), fares.value(i)));
        }
    }
    out
}

fn owned(rows: &[(i64, &str, f64)]) -> Vec<(i64, String, f64)> {
    rows.iter()
        .map(|(i, z, f)| (*i, z.to_string(), *f))
        .collect()
}

/// Every action in the table's `_delta_log` commit files, in version order.
fn log_actions(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(DELTA_LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `(appId, version)` of every `txn` action in the log.
fn txns(dir: &Path) -> Vec<(String, i64)> {
    log_actions(dir)
        .iter()
        .filter_map(|a| a.get("txn"))
        .map(|t| {
            (
                t["appId"].as_str().unwrap().to_string(),
                t["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Data files the table's latest snapshot references.
async fn active_files(dir: &Path) -> usize {
    let url = url::Url::from_directory_path(dir).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    table.snapshot().unwrap().log_data().num_files()
}

#[tokio::test]
async fn appends_epochs_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[]);
    let mut sink = open(&table).await;
    assert_eq!(sink.committed_epoch().await.unwrap(), None);
    sink.write_epoch(
        1,
        &[
            fares(&[(1, "a", 10.0), (2, "b", 20.0)]),
            fares(&[(3, "a", 30.0)]),
        ],
    )
    .await
    .unwrap();
    sink.write_epoch(2, &[fares(&[(4, "c", 40.0)])])
        .await
        .unwrap();
    sink.close().await.unwrap();
    assert_eq!(sink.committed_epoch().await.unwrap(), Some(2));
    assert_eq!(
        read_back(&table).await,
        owned(&[
            (1, "a", 10.0),
            (2, "b", 20.0),
            (3, "a", 30.0),
            (4, "c", 40.0)
        ])
    );
    let inferred = DeltaConnector.infer_schema(&table).await.unwrap().unwrap();
    let names: Vec<&str> = inferred
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["id", "zone", "fare"]);
}

#[tokio::test]
async fn replayed_epoch_is_skipped_even_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[]);
    let mut sink = open(&table).await;
    sink.write_epoch(1, &[fares(&[(1, "a", 1.0)])])
        .await
        .unwrap();
    sink.write_epoch(2, &[fares(&[(2, "a", 2.0)])])
        .await
        .unwrap();
    let before = read_back(&table).await;
    assert_eq!(before.len(), 2);

    // The same sink replays epoch 2 with other rows: nothing is written.
    sink.write_epoch(2, &[fares(&[(99, "z", 9.0)])])
        .await
        .unwrap();
    assert_eq!(read_back(&table).await, before);
    assert_eq!(sink.committed_epoch().await.unwrap(), Some(2));

    // A restarted pipeline (new sink on the same table) sees the same, and epoch 1 too.
    let mut restarted = open(&table).await;
    assert_eq!(restarted.committed_epoch().await.unwrap(), Some(2));
    restarted
        .write_epoch(1, &[fares(&[(98, "z", 9.0)])])
        .await
        .unwrap();
    restarted
        .write_epoch(2, &[fares(&[(99, "z", 9.0)])])
        .await
        .unwrap();
    assert_eq!(read_back(&table).await, before);
    restarted
        .write_epoch(3, &[fares(&[(3, "a", 3.0)])])
        .await
        .unwrap();
    assert_eq!(read_back(&table).await.len(), 3);
    assert_eq!(restarted.committed_epoch().await.unwrap(), Some(3));
}

#[tokio::test]
async fn merge_key_upserts_with_last_row_winning_within_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[("merge_key", "id")]);
    let mut sink = open(&table).await;
    sink.write_epoch(
        1,
        &[fares(&[(1, "a", 10.0), (2, "b", 20.0), (3, "c", 30.0)])],
    )
    .await
    .unwrap();
    // id 2 twice (across two batches): the later row wins; id 4 is new; ids 1 and 3 stay.
    sink.write_epoch(
        2,
        &[
            fares(&[(2, "b", 21.0), (4, "d", 40.0)]),
            fares(&[(2, "bb", 22.0)]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        read_back(&table).await,
        owned(&[
            (1, "a", 10.0),
            (2, "bb", 22.0),
            (3, "c", 30.0),
            (4, "d", 40.0)
        ])
    );
    // Epoch 2 is one MERGE commit carrying its txn action.
    let merge_commits: Vec<Value> = log_actions(&dir.path().join("out"))
        .into_iter()
        .filter_map(|a| a.get("commitInfo").cloned())
        .filter(|c| c["operation"] == "MERGE")
        .collect();
    assert_eq!(merge_commits.len(), 2, "{merge_commits:?}");
    assert_eq!(merge_commits[1][EPOCH_KEY], 2);
    // Replaying epoch 2 with different values changes nothing.
    sink.write_epoch(2, &[fares(&[(1, "x", 0.0)])])
        .await
        .unwrap();
    assert_eq!(read_back(&table).await[0], (1, "a".to_string(), 10.0));
}

#[tokio::test]
async fn null_merge_keys_match_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[("merge_key", "id")]);
    let nullable = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("zone", DataType::Utf8, false),
        Field::new("fare", DataType::Float64, true),
    ]));
    let batch = |ids: Vec<Option<i64>>, fares: Vec<f64>| {
        let zones = vec!["a"; ids.len()];
        RecordBatch::try_new(
            nullable.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(zones)),
                Arc::new(Float64Array::from(fares)),
            ],
        )
        .unwrap()
    };
    let mut sink = DeltaConnector
        .open_sink(&table, nullable.clone(), &context())
        .await
        .unwrap();
    sink.write_epoch(1, &[batch(vec![None, Some(1)], vec![1.0, 2.0])])
        .await
        .unwrap();
    sink.write_epoch(2, &[batch(vec![None], vec![3.0])])
        .await
        .unwrap();
    // An empty epoch of a merging sink still records its txn.
    sink.write_epoch(3, &[]).await.unwrap();
    assert_eq!(sink.committed_epoch().await.unwrap(), Some(3));
    let provider = DeltaConnector.batch_table(&table, schema()).await.unwrap();
    let batches = SessionContext::new()
        .read_table(provider)
        .unwrap()
        .sort(vec![col("id").sort(true, true)])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let back = concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(back.num_rows(), 2);
    let ids = back
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let fares = back
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert!(ids.is_null(0) && ids.value(1) == 1, "{back:?}");
    assert_eq!((fares.value(0), fares.value(1)), (3.0, 2.0));
}

#[tokio::test]
async fn merge_key_in_batch_mode_and_composite_keys() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[("merge_key", "zone, id")]);
    let mut sink = open(&table).await;
    sink.write_epoch(0, &[fares(&[(1, "a", 1.0), (1, "b", 2.0)])])
        .await
        .unwrap();
    // A second batch run merges again (epoch 0 carries no txn, so it is never skipped).
    let mut again = open(&table).await;
    again
        .write_epoch(0, &[fares(&[(1, "a", 5.0), (2, "a", 6.0), (1, "a", 7.0)])])
        .await
        .unwrap();
    assert_eq!(
        read_back(&table).await,
        owned(&[(1, "a", 7.0), (1, "b", 2.0), (2, "a", 6.0)])
    );
    assert_eq!(again.committed_epoch().await.unwrap(), None);
    assert!(txns(&dir.path().join("out")).is_empty());
}

#[tokio::test]
async fn batch_mode_appends_on_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[]);
    for _ in 0..2 {
        let mut sink = open(&table).await;
        sink.write_epoch(0, &[fares(&[(1, "a", 1.0)])])
            .await
            .unwrap();
        sink.write_epoch(0, &[]).await.unwrap();
    }
    assert_eq!(read_back(&table).await.len(), 2);
}

#[tokio::test]
async fn log_records_txn_and_volley_commit_info() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut sink = open(&decl(&out, &[])).await;
    sink.write_epoch(1, &[fares(&[(1, "a", 1.0)])])
        .await
        .unwrap();
    sink.write_epoch(2, &[fares(&[(2, "a", 2.0)])])
        .await
        .unwrap();
    let app = format!("{PIPELINE}:fares");
    assert_eq!(txns(&out), vec![(app.clone(), 1), (app, 2)]);
    let infos: Vec<Value> = log_actions(&out)
        .into_iter()
        .filter_map(|a| a.get("commitInfo").cloned())
        .filter(|c| c.get(EPOCH_KEY).is_some())
        .collect();
    assert_eq!(infos.len(), 2);
    for (info, epoch) in infos.iter().zip([1, 2]) {
        assert_eq!(info[PIPELINE_KEY], PIPELINE);
        assert_eq!(info[EPOCH_KEY], epoch);
    }

    // The app_id option replaces the default application id.
    let other = dir.path().join("other");
    let mut sink = DeltaSink::open(
        &decl(&other, &[("app_id", "nightly-demand")]),
        schema(),
        &context(),
    )
    .await
    .unwrap();
    assert_eq!(sink.app_id(), "nightly-demand");
    sink.write_epoch(7, &[fares(&[(1, "a", 1.0)])])
        .await
        .unwrap();
    assert_eq!(txns(&other), vec![("nightly-demand".to_string(), 7)]);
}

#[tokio::test]
async fn empty_epoch_commits_its_txn_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table = decl(&out, &[]);
    let mut sink = open(&table).await;
    sink.write_epoch(1, &[fares(&[(1, "a", 1.0)])])
        .await
        .unwrap();
    sink.write_epoch(2, &[fares(&[])]).await.unwrap();
    assert_eq!(sink.committed_epoch().await.unwrap(), Some(2));
    assert_eq!(txns(&out).last().unwrap().1, 2);
    assert_eq!(read_back(&table).await.len(), 1);
}

#[tokio::test]
async fn existing_table_with_other_columns_is_rejected_with_every_difference() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("out"), &[]);
    open(&table).await;
    let other = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("zone", DataType::Utf8, false),
        Field::new("tip", DataType::Float64, true),
    ]));
    let err = DeltaConnector
        .open_sink(&table, other, &context())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Config(_)), "{err}");
    let text = err.to_string();
    for expected in [
        "fares",
        "column 'id' is long in the table but string in the query's output",
        "column 'fare' (double) is in the table but not in the query's output",
        "column 'tip' (double) is in the query's output but not in the table",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from: {text}");
    }
    assert!(!text.contains("'zone'"), "{text}");

    // Differences in nullability alone, or column order, are accepted.
    let reordered = Arc::new(Schema::new(vec![
        Field::new("fare", DataType::Float64, false),
        Field::new("id", DataType::Int64, true),
        Field::new("zone", DataType::Utf8, true),
    ]));
    let mut sink = DeltaConnector
        .open_sink(&table, reordered.clone(), &context())
        .await
        .unwrap();
    let batch = RecordBatch::try_new(
        reordered,
        vec![
            Arc::new(Float64Array::from(vec![1.5])),
            Arc::new(Int64Array::from(vec![7])),
            Arc::new(StringArray::from(vec!["q"])),
        ],
    )
    .unwrap();
    sink.write_epoch(1, &[batch]).await.unwrap();
    assert_eq!(read_back(&table).await, owned(&[(7, "q", 1.5)]));
}

#[tokio::test]
async fn partition_by_creates_a_partitioned_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table = decl(&out, &[("partition_by", "zone")]);
    let mut sink = open(&table).await;
    sink.write_epoch(1, &[fares(&[(1, "a", 1.0), (2, "b", 2.0), (3, "a", 3.0)])])
        .await
        .unwrap();
    let metadata = log_actions(&out)
        .into_iter()
        .find_map(|a| a.get("metaData").cloned())
        .unwrap();
    assert_eq!(metadata["partitionColumns"], serde_json::json!(["zone"]));
    let dirs: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != DELTA_LOG_DIR)
        .collect();
    assert_eq!(
        dirs,
        BTreeSet::from(["zone=a".to_string(), "zone=b".to_string()])
    );
    assert_eq!(
        read_back(&table).await,
        owned(&[(1, "a", 1.0), (2, "b", 2.0), (3, "a", 3.0)])
    );

    // Reopening with other partition columns is an error naming both.
    let err = DeltaConnector
        .open_sink(&decl(&out, &[("partition_by", "id")]), schema(), &context())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("partition_by") && err.contains("'id'") && err.contains("'zone'"),
        "{err}"
    );
}

#[tokio::test]
async fn partition_and_merge_columns_must_be_output_columns() {
    let dir = tempfile::tempdir().unwrap();
    for (option, value) in [("partition_by", "zone, day"), ("merge_key", "ride")] {
        let table = decl(&dir.path().join(option), &[(option, value)]);
        let err = DeltaConnector
            .open_sink(&table, schema(), &context())
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::Config(_)), "{err}");
        let text = err.to_string();
        let missing = value.split(',').next_back().unwrap().trim();
        assert!(
            text.contains("fares")
                && text.contains(option)
                && text.contains(&format!("'{missing}'")),
            "{text}"
        );
        assert!(text.contains("'id', 'zone', 'fare'"), "{text}");
    }
}

#[tokio::test]
async fn compact_every_reduces_the_file_count() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let compacted = dir.path().join("compacted");
    let mut compactions = Vec::new();
    for (out, options) in [(&plain, vec![]), (&compacted, vec![("compact_every", "2")])] {
        let mut sink = DeltaSink::open(&decl(out, &options), schema(), &context())
            .await
            .unwrap();
        for epoch in 1..=5_i64 {
            sink.write_epoch(epoch as u64, &[fares(&[(epoch, "a", 1.0)])])
                .await
                .unwrap();
        }
        compactions.push(sink.compactions());
    }
    assert_eq!(compactions, [0, 2]);
    // One file per epoch without compaction.
    assert_eq!(active_files(&plain).await, 5);
    // Compacted after epochs 2 and 4: one file for 1–4, one for epoch 5.
    assert_eq!(active_files(&compacted).await, 2);
    let plain_table = decl(&plain, &[]);
    let compacted_table = decl(&compacted, &[]);
    assert_eq!(
        read_back(&compacted_table).await,
        read_back(&plain_table).await
    );
    // Compaction commits carry no txn: the last epoch is still the one recorded.
    let mut sink = open(&compacted_table).await;
    assert_eq!(sink.committed_epoch().await.unwrap(), Some(5));
}

#[tokio::test]
async fn nanosecond_timestamps_round_trip_with_the_declared_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rides");
    let table = decl_named("rides", out.to_str().unwrap(), &[], None);
    let mut sink = DeltaConnector
        .open_sink(&table, rides_schema(), &context())
        .await
        .unwrap();
    let opts = GeneratorOptions::default();
    let rows = generate_rides(&opts, 0, 50);
    sink.write_epoch(1, &[rows.slice(0, 20), rows.slice(20, 30)])
        .await
        .unwrap();

    // Inferred: Delta stores microseconds.
    let inferred = DeltaConnector.infer_schema(&table).await.unwrap().unwrap();
    assert!(matches!(
        inferred.field_with_name("event_time").unwrap().data_type(),
        DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None)
    ));
    // Declared as nanoseconds: read back cast to the declared schema.
    let declared = decl_named("rides", out.to_str().unwrap(), &[], Some(rides_schema()));
    let provider = DeltaConnector
        .batch_table(&declared, rides_schema())
        .await
        .unwrap();
    assert_eq!(
        provider.schema().fields().len(),
        rides_schema().fields().len()
    );
    let batches = SessionContext::new()
        .read_table(provider)
        .unwrap()
        .sort(vec![col("request_id").sort(true, false)])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let back = concat_batches(&batches[0].schema(), &batches).unwrap();
    for (i, field) in rides_schema().fields().iter().enumerate() {
        assert_eq!(back.column(i).data_type(), field.data_type());
        assert_eq!(
            back.column(i).to_data(),
            rows.column(i).to_data(),
            "column {}",
            field.name()
        );
    }
}

#[tokio::test]
async fn a_column_declared_a_lossy_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(dir.path(), &[]);
    let mut sink = open(&table).await;
    sink.write_epoch(1, &[fares(&[(1, "a", 871.47)])])
        .await
        .unwrap();
    let declared = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("fare", DataType::Int64, true),
    ]));
    let table = decl_named(
        "fares",
        dir.path().to_str().unwrap(),
        &[],
        Some(Arc::clone(&declared)),
    );
    let err = match DeltaConnector.batch_table(&table, declared).await {
        Ok(_) => panic!("DOUBLE read as BIGINT loses the fraction"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(
            "table 'fares': column 'fare' is DOUBLE in the Delta table but declared BIGINT"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn memory_and_file_url_locations_work() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path().join("by-url")).unwrap();
    for location in ["memory://delta-tests/fares", url.as_str()] {
        let table = decl_named("fares", location, &[], None);
        let mut sink = open(&table).await;
        sink.write_epoch(1, &[fares(&[(1, "a", 1.0)])])
            .await
            .unwrap();
        let mut again = open(&table).await;
        assert_eq!(
            again.committed_epoch().await.unwrap(),
            Some(1),
            "{location}"
        );
        assert_eq!(
            read_back(&table).await,
            owned(&[(1, "a", 1.0)]),
            "{location}"
        );
    }
}

#[tokio::test]
async fn missing_table_infers_nothing_and_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let table = decl(&dir.path().join("nothing"), &[]);
    assert!(DeltaConnector.infer_schema(&table).await.unwrap().is_none());
    let err = DeltaConnector
        .batch_table(&table, schema())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fares") && err.contains("no Delta table"),
        "{err}"
    );
}

#[test]
fn registered_as_delta_with_its_options() {
    let registry = ConnectorRegistry::builtin();
    let connector = registry.get("delta").unwrap();
    assert_eq!(connector.kind(), "DELTA");
    let names: Vec<&str> = connector.options().iter().map(|o| o.name).collect();
    assert_eq!(
        names,
        ["partition_by", "app_id", "compact_every", "refresh"]
    );
}

#[tokio::test]
async fn dead_letters_into_a_delta_table_once_per_epoch() {
    use crate::dead_letter::{DeadLetterBatch, DeadLetterWriter};
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("letters");
    let url = format!("delta:{}", target.display());
    let context = SinkContext {
        pipeline_id: PIPELINE.into(),
        instance: Some("p2".into()),
        models: Vec::new(),
    };
    let letters = |first: i64| {
        vec![
            DeadLetterBatch {
                source: "fares".into(),
                reason: "late".into(),
                rows: fares(&[(first, "a", 1.5), (first + 1, "b", 2.5)]),
            },
            DeadLetterBatch {
                source: "fares".into(),
                reason: "undecodable record".into(),
                rows: fares(&[(first + 2, "c", 3.5)]),
            },
        ]
    };
    let mut writer = DeadLetterWriter::for_pipeline(&url, &context).unwrap();
    writer.write_epoch(3, &letters(10)).await.unwrap();
    // A restarted pipeline replays epoch 3 (skipped: the table records it), then goes on.
    let mut writer = DeadLetterWriter::for_pipeline(&url, &context).unwrap();
    writer.write_epoch(3, &letters(10)).await.unwrap();
    writer.write_epoch(4, &letters(20)).await.unwrap();

    let table = decl_named("letters", target.to_str().unwrap(), &[], None);
    let provider = DeltaConnector
        .batch_table(&table, letters_schema())
        .await
        .unwrap();
    let batches = SessionContext::new()
        .read_table(provider)
        .unwrap()
        .sort(vec![col("row").sort(true, false)])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = concat_batches(&letters_schema(), &batches).unwrap();
    let column = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone()
    };
    let (reasons, rows) = (column(1), column(3));
    assert_eq!(batch.num_rows(), 6, "epoch 3 once, epoch 4 once");
    assert!(rows.value(0).contains(r#""id":10"#), "{}", rows.value(0));
    assert_eq!(reasons.value(2), "undecodable record");
    assert_eq!(
        txns(&target),
        vec![
            (format!("{PIPELINE}:fares_dead_letters:p2"), 3),
            (format!("{PIPELINE}:fares_dead_letters:p2"), 4)
        ]
    );
}

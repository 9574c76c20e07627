//! Row groups decoded several at once come out in the order one scan reads them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, col};
use futures::TryStreamExt;

use super::parallel::ordered_row_groups;

/// `dir/name`: ids `first..first + rows`, a string column with NULLs and a float column with
/// NaN, ±0 and ±inf, in row groups of `group_rows`.
fn write_file(dir: &std::path::Path, name: &str, first: i64, rows: i64, group_rows: usize) {
    let ids: Vec<i64> = (first..first + rows).collect();
    let names: Vec<Option<String>> = ids
        .iter()
        .map(|i| (i % 7 != 3).then(|| format!("user-{}", i % 11)))
        .collect();
    let specials = [f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 1.5];
    let values: Vec<f64> = ids.iter().map(|i| specials[(*i % 6) as usize]).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names))),
        ("value", Arc::new(Float64Array::from(values))),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    // Written in small pieces, so row groups do not line up with the batches written.
    let mut at = 0;
    while at < batch.num_rows() {
        let len = 17.min(batch.num_rows() - at);
        writer.write(&batch.slice(at, len)).unwrap();
        at += len;
    }
    writer.close().unwrap();
}

async fn read(dir: &std::path::Path, columns: &[&str], parallel: usize) -> RecordBatch {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let mut frame = ctx
        .read_parquet(dir.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    if !columns.is_empty() {
        frame = frame
            .select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>())
            .unwrap();
    }
    let task = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await.unwrap();
    let schema = plan.schema();
    let store = Arc::new(object_store::local::LocalFileSystem::new());
    let batches: Vec<RecordBatch> = ordered_row_groups(plan, task, store, parallel)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    concat_batches(&schema, &batches).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn row_groups_read_at_once_keep_the_file_order() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.parquet", 0, 250, 40);
    write_file(dir.path(), "b.parquet", 250, 5, 100);
    write_file(dir.path(), "c.parquet", 255, 0, 10);
    write_file(dir.path(), "d.parquet", 255, 123, 10);
    let one = read(dir.path(), &[], 1).await;
    let ids = one.column(0).as_primitive::<Int64Type>();
    assert_eq!(
        ids.values().to_vec(),
        (0..378).collect::<Vec<i64>>(),
        "one scan reads the files in path order"
    );
    assert!(one.column(1).null_count() > 0);
    for parallel in [2, 3, 8] {
        assert_eq!(
            read(dir.path(), &[], parallel).await,
            one,
            "{parallel} at once"
        );
    }
    // Some columns, in another order than the file's.
    let some = read(dir.path(), &["value", "id"], 1).await;
    assert_eq!(some.num_rows(), 378);
    assert_eq!(read(dir.path(), &["value", "id"], 4).await, some);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_alone_reads_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "c.parquet", 0, 0, 10);
    assert_eq!(read(dir.path(), &[], 4).await.num_rows(), 0);
}

//! Bounded file sources replayed in event-time order: unsorted files of every format come out
//! sorted (spilling past `sort_memory`), the same on every run and after a seek; `replay_order`
//! 'file' keeps the files' order; files already in order are read as they are.

use std::time::Duration;

use arrow::array::{Array, Int64Array, TimestampMillisecondArray};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use tokio::time::Instant;
use volley_sql::{StatementRef, TableOptions, WatermarkSpec};

use super::*;
use crate::generator::{GeneratorOptions, generate_rides, rides_schema};
use crate::traits::{Position, SourcePoll};

fn watermarked(format: FileFormat, location: &str, options: &[(&str, &str)]) -> TableDecl {
    TableDecl {
        name: "trips".to_string(),
        kind: format.kind().to_string(),
        location: location.to_string(),
        declared_schema: Some(rides_schema()),
        options: TableOptions::unchecked(
            "trips",
            options.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        ),
        watermark: Some(WatermarkSpec {
            column: "event_time".to_string(),
            delay: Duration::from_secs(5),
        }),
        at: StatementRef::default(),
    }
}

/// Rides whose event times wander up to 20 minutes back: far from sorted.
fn unsorted(rows: u64) -> RecordBatch {
    let opts = GeneratorOptions {
        disorder: Duration::from_secs(1200),
        ..GeneratorOptions::default()
    };
    generate_rides(&opts, 0, rows)
}

async fn read_all(source: &mut dyn Source, max_rows: usize) -> RecordBatch {
    let mut out = Vec::new();
    loop {
        match source
            .poll_batch(max_rows, Instant::now() + Duration::from_secs(60))
            .await
            .unwrap()
        {
            SourcePoll::Data(batch) => out.push(batch),
            SourcePoll::Exhausted => break,
            other => panic!("a file source gave {other:?}"),
        }
    }
    concat_batches(&rides_schema(), &out).unwrap()
}

fn event_times(batch: &RecordBatch) -> Vec<i64> {
    let column = batch.column_by_name("event_time").unwrap();
    let times = column
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .map(|a| a.values().to_vec());
    times.unwrap_or_else(|| {
        let cast = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64).unwrap();
        cast.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    })
}

/// The rows ordered by their unique request id: equal multisets compare equal.
fn by_id(batch: &RecordBatch) -> RecordBatch {
    let indices = lexsort_to_indices(
        &[SortColumn {
            values: batch.column_by_name("request_id").unwrap().clone(),
            options: None,
        }],
        None,
    )
    .unwrap();
    take_record_batch(batch, &indices).unwrap()
}

async fn write(format: FileFormat, dir: &std::path::Path, batches: &[RecordBatch]) -> String {
    let out = dir.join("in");
    let table = watermarked(format, out.to_str().unwrap(), &[]);
    let mut sink = FileConnector::new(format)
        .open_sink(
            &table,
            rides_schema(),
            &crate::traits::SinkContext::default(),
        )
        .await
        .unwrap();
    for (epoch, batch) in (1..).zip(batches) {
        sink.write_epoch(epoch, std::slice::from_ref(batch))
            .await
            .unwrap();
    }
    sink.close().await.unwrap();
    out.to_string_lossy().into_owned()
}

#[tokio::test]
async fn unsorted_files_of_every_format_are_replayed_in_event_time_order() {
    for format in FileFormat::ALL {
        let dir = tempfile::tempdir().unwrap();
        let written = unsorted(60_000);
        // Two files: the second holds rows older than the end of the first.
        let location = write(
            format,
            dir.path(),
            &[written.slice(0, 35_000), written.slice(35_000, 25_000)],
        )
        .await;
        assert!(
            event_times(&written).windows(2).any(|w| w[0] > w[1]),
            "the input must be unsorted"
        );
        let connector = FileConnector::new(format);
        // 1 MiB holds a fraction of 60,000 rides: the sort spills.
        let table = watermarked(format, &location, &[("sort_memory", "1 MiB")]);
        let mut source = connector.open_source(&table, rides_schema()).await.unwrap();
        let sorted = read_all(source.as_mut(), 4096).await;
        assert_eq!(source.position().offset(), 60_000, "{format:?}");
        let times = event_times(&sorted);
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{format:?}: rows come in event-time order"
        );
        assert_eq!(by_id(&sorted), by_id(&written), "{format:?}: the same rows");

        // Another run, reading in other slices and with more memory, gives the same order;
        // a restore seeks to the same rows.
        let table_again = watermarked(format, &location, &[("sort_memory", "64 MiB")]);
        let mut again = connector
            .open_source(&table_again, rides_schema())
            .await
            .unwrap();
        assert_eq!(read_all(again.as_mut(), 777).await, sorted, "{format:?}");
        let mut resumed = connector
            .open_source(&table_again, rides_schema())
            .await
            .unwrap();
        resumed.seek(&Position::single(41_234)).await.unwrap();
        assert_eq!(
            read_all(resumed.as_mut(), 5000).await,
            sorted.slice(41_234, 60_000 - 41_234),
            "{format:?}: a seek lands on the same rows"
        );

        // 'file' keeps the files' order.
        let as_written = watermarked(format, &location, &[("replay_order", "file")]);
        let mut source = connector
            .open_source(&as_written, rides_schema())
            .await
            .unwrap();
        assert_eq!(read_all(source.as_mut(), 4096).await, written, "{format:?}");
    }
}

#[tokio::test]
async fn parquet_already_in_event_time_order_is_read_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let written = unsorted(5_000);
    let indices = lexsort_to_indices(
        &[SortColumn {
            values: written.column_by_name("event_time").unwrap().clone(),
            options: None,
        }],
        None,
    )
    .unwrap();
    let ordered = take_record_batch(&written, &indices).unwrap();
    let location = write(
        FileFormat::Parquet,
        dir.path(),
        std::slice::from_ref(&ordered),
    )
    .await;
    let table = watermarked(FileFormat::Parquet, &location, &[]);
    let mut source = FileConnector::new(FileFormat::Parquet)
        .open_source(&table, rides_schema())
        .await
        .unwrap();
    // Ties on event time keep the file's order: nothing was sorted.
    assert_eq!(read_all(source.as_mut(), 1000).await, ordered);
    assert!(
        format!("{source:?}").contains("in order as read"),
        "{source:?}"
    );
}

#[tokio::test]
async fn an_unclosed_quote_sets_aside_its_line_and_reads_the_lines_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.csv");
    std::fs::write(&path, "id,name\n1,\"multi\nline\"\n2,\"b\n3,c\n4,d\n").unwrap();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, true),
    ]));
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new());
    let file = object_store::path::Path::from_filesystem_path(&path).unwrap();
    let mut source = RecordFileSource::new(
        "orders",
        Arc::clone(&schema),
        RecordFormat::Csv {
            delimiter: b',',
            has_header: true,
        },
        None,
        store,
        vec![file],
    );
    let mut rows = Vec::new();
    loop {
        match source
            .poll_batch(100, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap()
        {
            SourcePoll::Data(batch) => rows.push(batch),
            SourcePoll::Exhausted => break,
            other => panic!("{other:?}"),
        }
    }
    let rows = concat_batches(&schema, &rows).unwrap();
    let ids = rows
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec();
    assert_eq!(ids, [1, 3, 4], "the lines after the broken one are read");
    let rejected = source.take_rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].offset, 4);
    assert_eq!(rejected[0].payload, b"2,\"b");
    assert!(
        rejected[0].error.contains("unclosed quote")
            && rejected[0].error.contains("line 4")
            && rejected[0].error.contains("the 2 lines after it"),
        "{}",
        rejected[0].error
    );
}

//! Retained live tables: the last N rows or the last duration of a keyless stream.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use super::{RetainedTable, Retention};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]))
}

fn batch(values: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from_iter_values(values))],
    )
    .unwrap()
}

fn values(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

#[test]
fn the_last_n_rows_are_kept_in_arrival_order() {
    let mut table = RetainedTable::new("recent", schema(), Retention::Rows(5));
    table.apply(&batch(0..3)).unwrap();
    assert_eq!(values(&table.snapshot().unwrap()), vec![0, 1, 2]);
    table.apply(&batch(3..7)).unwrap();
    assert_eq!(values(&table.snapshot().unwrap()), vec![2, 3, 4, 5, 6]);
    table.apply(&batch(7..20)).unwrap();
    assert_eq!(values(&table.snapshot().unwrap()), vec![15, 16, 17, 18, 19]);
    assert_eq!(table.len(), 5);
    // Many small epochs: the snapshot stays short and the rows the same.
    let mut many = RetainedTable::new("recent", schema(), Retention::Rows(1000));
    for i in 0..2000 {
        many.apply(&batch(i..i + 1)).unwrap();
        let snapshot = many.snapshot().unwrap();
        assert!(snapshot.len() <= 257, "{} chunks", snapshot.len());
    }
    assert_eq!(
        values(&many.snapshot().unwrap()),
        (1000..2000).collect::<Vec<_>>()
    );
    // A batch of another schema is refused.
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("m", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    assert!(table.apply(&other).is_err());
}

#[test]
fn rows_older_than_the_duration_are_dropped() {
    let mut table = RetainedTable::new(
        "recent",
        schema(),
        Retention::Duration(Duration::from_millis(150)),
    );
    table.apply(&batch(0..3)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    table.apply(&batch(3..5)).unwrap();
    assert_eq!(values(&table.snapshot().unwrap()), vec![3, 4]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(table.snapshot().unwrap().is_empty());
    assert!(table.is_empty());
}

#[test]
fn retention_reads_rows_or_a_duration() {
    assert_eq!(
        Retention::parse("t", "10000 rows").unwrap(),
        Retention::Rows(10_000)
    );
    assert_eq!(
        Retention::parse("t", " 1 ROW ").unwrap(),
        Retention::Rows(1)
    );
    assert_eq!(
        Retention::parse("t", "10 minutes").unwrap(),
        Retention::Duration(Duration::from_secs(600))
    );
    for bad in ["0 rows", "lots", "-3 rows", "0 seconds", ""] {
        let err = Retention::parse("t", bad).unwrap_err().to_string();
        assert!(err.contains("live_retention"), "{bad}: {err}");
    }
}

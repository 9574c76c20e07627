//! OVER windows equal DuckDB's answer for the same SQL over the same rows, in `volley batch`
//! and streaming at every micro-batch size of the parity matrix: rolling sums, averages,
//! counts, extremes and deviations over amounts with NaN, ±inf and NULLs and duplicate event
//! times (RANGE frames and ranks, which ties do not change), and ROWS frames, LAG, LEAD and
//! FIRST/LAST/NTH_VALUE over rows with one event time each per user.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use volley_connectors::ConnectorRegistry;
use volley_engine::batch::batch_outputs;
use volley_engine::compare::{Fold, compare_sink};
use volley_engine::verify::{InputOrder, VerifyOptions, stream_outputs};

use crate::duckdb_oracle::{dirty_payments_csv, stream_sizings};
use crate::harness::{pipeline, rows};
use crate::process::succeed;
use crate::readers::python;

/// `(sink, SELECT)`: the same text for Volley and DuckDB.
const QUERIES: [(&str, &str); 6] = [
    (
        "rolling",
        "SELECT user_id, ts, amount, sum(amount) OVER w AS s, avg(amount) OVER w AS a, count(amount) OVER w AS n, count(*) OVER w AS rows_in \
         FROM pay WINDOW w AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW)",
    ),
    (
        "extremes",
        "SELECT user_id, ts, amount, min(amount) OVER w AS lo, max(amount) OVER w AS hi, stddev_pop(CASE WHEN abs(amount) < 1e300 THEN amount END) OVER w AS sd \
         FROM pay WINDOW w AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW)",
    ),
    (
        "ranks",
        "SELECT user_id, ts, amount, RANK() OVER w AS rk, DENSE_RANK() OVER w AS drk, count(*) OVER w AS so_far, sum(amount) OVER w AS total_so_far \
         FROM pay WINDOW w AS (PARTITION BY user_id ORDER BY ts)",
    ),
    (
        "navigation",
        "SELECT user_id, ts, amount, ROW_NUMBER() OVER w AS rn, LAG(amount) OVER w AS prev, LEAD(amount, 2, 0) OVER w AS next2, \
                ts - LAG(ts) OVER w AS since, NTH_VALUE(amount, 2) OVER w AS second \
         FROM seq WINDOW w AS (PARTITION BY user_id ORDER BY ts)",
    ),
    (
        "last_rows",
        "SELECT user_id, ts, amount, avg(amount) OVER w AS a6, max(amount) OVER w AS hi6, FIRST_VALUE(amount) OVER w AS first6, \
                LAST_VALUE(amount) OVER w AS last6, sum(amount) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS running \
         FROM seq WINDOW w AS (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 5 PRECEDING AND CURRENT ROW)",
    ),
    (
        "everyone",
        "SELECT user_id, ts, count(*) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS per_minute, \
                sum(amount) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND CURRENT ROW) AS five_minutes \
         FROM pay",
    ),
];

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Rows in one type per kind of value, named `c0`, `c1`, …: integers as BIGINT, floats as
/// DOUBLE, times and durations as microseconds, text as UTF-8.
fn normalized(batches: &[RecordBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let columns: Vec<ArrayRef> = b
                .columns()
                .iter()
                .map(|c| {
                    let to = match c.data_type() {
                        DataType::Timestamp(_, _) => {
                            let micros =
                                cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None)).unwrap();
                            return cast(&micros, &DataType::Int64).unwrap();
                        }
                        DataType::Interval(_) => return interval_micros(c),
                        DataType::Duration(_) => {
                            let micros =
                                cast(c, &DataType::Duration(TimeUnit::Microsecond)).unwrap();
                            return cast(&micros, &DataType::Int64).unwrap();
                        }
                        t if t.is_floating() => DataType::Float64,
                        t if t.is_integer() => DataType::Int64,
                        _ => DataType::Utf8,
                    };
                    cast(c, &to).unwrap()
                })
                .collect();
            let fields: Vec<Field> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
        })
        .collect()
}

/// Intervals of days and smaller units as microseconds (DuckDB writes a time difference as an
/// interval, DataFusion as a duration).
fn interval_micros(c: &ArrayRef) -> ArrayRef {
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit};
    const DAY: i64 = 86_400_000_000;
    let values: Vec<Option<i64>> = match c.data_type() {
        DataType::Interval(IntervalUnit::DayTime) => {
            let a = c.as_primitive::<IntervalDayTimeType>();
            (0..a.len())
                .map(|i| {
                    a.is_valid(i).then(|| {
                        let v = a.value(i);
                        i64::from(v.days) * DAY + i64::from(v.milliseconds) * 1000
                    })
                })
                .collect()
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let a = c.as_primitive::<IntervalMonthDayNanoType>();
            (0..a.len())
                .map(|i| {
                    a.is_valid(i).then(|| {
                        let v = a.value(i);
                        assert_eq!(v.months, 0, "an interval of months");
                        i64::from(v.days) * DAY + v.nanoseconds / 1000
                    })
                })
                .collect()
        }
        other => panic!("interval {other}"),
    };
    Arc::new(Int64Array::from(values))
}

fn assert_same(what: &str, sink: &str, ours: &[RecordBatch], oracle: &[RecordBatch]) {
    let columns = oracle[0].num_columns();
    let names: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    let report = compare_sink(
        sink,
        &names,
        &[],
        Fold::Append,
        &normalized(oracle),
        &[(0, normalized(ours))],
        5,
    )
    .unwrap();
    assert!(
        report.matched == report.total && report.total > 0,
        "{what}: {sink} matched {}/{}: {:#?}",
        report.matched,
        report.total,
        report.differences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_windows_equal_duckdb_in_batch_and_streaming() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pay = dir.path().join("pay.csv");
    let seq = dir.path().join("seq.csv");
    std::fs::write(&pay, dirty_payments_csv(3000, 0x9e37_79b9_7f4a_7c15, false)).unwrap();
    std::fs::write(&seq, dirty_payments_csv(2000, 0x2545_f491_4f6c_dd1d, true)).unwrap();
    let queries = dir.path().join("queries.sql");
    let lines: Vec<String> = QUERIES
        .iter()
        .map(|(name, sql)| format!("{name}\t{sql}"))
        .collect();
    std::fs::write(&queries, lines.join("\n")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/duckdb_over.py");
    succeed(
        Command::new(&python)
            .arg(script)
            .args([&pay, &seq, &queries])
            .arg(dir.path()),
    );

    let mut sql = String::new();
    for (table, path) in [("pay", &pay), ("seq", &seq)] {
        sql.push_str(&format!(
            "CREATE EXTERNAL TABLE {table} (user_id BIGINT, ts TIMESTAMP NOT NULL, amount DOUBLE)
               STORED AS CSV LOCATION '{}' OPTIONS ('watermark' 'ts - INTERVAL ''1 second''');\n",
            path.display()
        ));
    }
    for (name, select) in QUERIES {
        sql.push_str(&format!(
            "CREATE EXTERNAL TABLE {name} STORED AS BLACKHOLE LOCATION 'x';\nINSERT INTO {name} {select};\n"
        ));
    }
    let p = pipeline(&sql).await;
    let input = rows(&p).await;
    let batch = batch_outputs(&p, &input).await.unwrap();
    for (name, _) in QUERIES {
        let oracle = read_parquet(&dir.path().join(format!("{name}.parquet")));
        assert_same("volley batch", name, &batch[name], &oracle);
    }
    for (sizing, workers) in stream_sizings() {
        let opts = VerifyOptions {
            sizing: sizing.clone(),
            order: InputOrder::Shuffled,
            seed: 5,
            max_differences: 3,
            workers: Some(workers),
        };
        let (stream, _) = stream_outputs(&p, &ConnectorRegistry::builtin(), &input, &opts)
            .await
            .unwrap();
        for (name, _) in QUERIES {
            let ours: Vec<RecordBatch> = stream[name]
                .iter()
                .flat_map(|(_, b)| b.iter().cloned())
                .collect();
            let oracle = read_parquet(&dir.path().join(format!("{name}.parquet")));
            assert_same(
                &format!("streaming {sizing:?}, {workers} workers"),
                name,
                &ours,
                &oracle,
            );
        }
    }
}

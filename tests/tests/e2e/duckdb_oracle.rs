//! min/max per window over data with NaN (both signs), ±0.0, ±inf and NULLs equal DuckDB's
//! answer, in `volley batch` and in streaming at every micro-batch size of the parity matrix;
//! so do wider windows rolled up from those (an aggregate over an aggregate).
//! Batch is Volley's own code too: DuckDB is the independent oracle.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use volley_connectors::ConnectorRegistry;
use volley_connectors::generator::{GeneratorOptions, GeneratorStream, generate_payments};
use volley_engine::driver::BatchSizing;
use volley_engine::verify::{InputOrder, VerifyOptions, stream_outputs};

use crate::harness::{pipeline, rows};
use crate::process::{succeed, volley_ok};
use crate::readers::python;

/// `(user, window start µs)` → `[min, max, min as REAL, max as REAL]`.
type Answer = BTreeMap<(Option<i64>, i64), [Option<f64>; 4]>;

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let files: Vec<_> = if path.is_dir() {
        let mut f: Vec<_> = path
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        f
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .flat_map(|f| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn float(batch: &RecordBatch, name: &str, row: usize) -> Option<f64> {
    let column = cast(batch.column_by_name(name).unwrap(), &DataType::Float64).unwrap();
    let values = column.as_any().downcast_ref::<Float64Array>().unwrap();
    values.is_valid(row).then(|| values.value(row))
}

/// The answer in `batches`, whose window column `w` is a timestamp or epoch microseconds.
fn answer(batches: &[RecordBatch], w: &str) -> Answer {
    let mut out = Answer::new();
    for b in batches {
        let user = cast(b.column_by_name("user_id").unwrap(), &DataType::Int64).unwrap();
        let user = user.as_primitive::<Int64Type>();
        let start = b.column_by_name(w).unwrap();
        let start = match start.data_type() {
            DataType::Timestamp(_, _) => cast(
                &cast(start, &DataType::Timestamp(TimeUnit::Microsecond, None)).unwrap(),
                &DataType::Int64,
            )
            .unwrap(),
            _ => cast(start, &DataType::Int64).unwrap(),
        };
        let start = start.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let key = ((!user.is_null(i)).then(|| user.value(i)), start.value(i));
            let row = [
                float(b, "lo", i),
                float(b, "hi", i),
                float(b, "lo32", i),
                float(b, "hi32", i),
            ];
            assert!(out.insert(key, row).is_none(), "window {key:?} twice");
        }
    }
    out
}

/// NULL equals NULL, NaN equals NaN, -0.0 equals +0.0 (DuckDB does not tell them apart).
fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a.is_nan() && b.is_nan()) || a == b,
        (None, None) => true,
        _ => false,
    }
}

fn assert_answers(what: &str, ours: &Answer, oracle: &Answer) {
    assert_eq!(ours.len(), oracle.len(), "{what}: windows");
    for (key, want) in oracle {
        let got = ours
            .get(key)
            .unwrap_or_else(|| panic!("{what}: no window {key:?}"));
        assert!(
            got.iter().zip(want).all(|(g, w)| same(*g, *w)),
            "{what}: window {key:?}: Volley {got:?}, DuckDB {want:?}"
        );
    }
}

const SQL: &str = "CREATE EXTERNAL TABLE payments STORED AS PARQUET LOCATION 'payments.parquet'
     OPTIONS ('watermark' 'event_time - INTERVAL ''2 seconds''');
     CREATE EXTERNAL TABLE extremes STORED AS PARQUET LOCATION 'out/extremes';
     INSERT INTO extremes
     SELECT user_id, date_bin(INTERVAL '2 seconds', event_time) AS w,
            min(amount) AS lo, max(amount) AS hi,
            min(arrow_cast(amount, 'Float32')) AS lo32, max(arrow_cast(amount, 'Float32')) AS hi32
     FROM payments GROUP BY 1, 2;";

/// The same extremes per user and 6-second window, rolled up from the 2-second windows.
const TWO_STAGE_SQL: &str = "CREATE EXTERNAL TABLE payments STORED AS PARQUET LOCATION 'payments.parquet'
     OPTIONS ('watermark' 'event_time - INTERVAL ''2 seconds''');
     CREATE EXTERNAL TABLE extremes STORED AS PARQUET LOCATION 'out/extremes';
     INSERT INTO extremes
     SELECT user_id, date_bin(INTERVAL '6 seconds', w2) AS w,
            min(lo) AS lo, max(hi) AS hi, min(lo32) AS lo32, max(hi32) AS hi32
     FROM (SELECT user_id, date_bin(INTERVAL '2 seconds', event_time) AS w2,
                  min(amount) AS lo, max(amount) AS hi,
                  min(arrow_cast(amount, 'Float32')) AS lo32, max(arrow_cast(amount, 'Float32')) AS hi32
           FROM payments GROUP BY 1, 2) AS per_window
     GROUP BY 1, 2;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_and_max_per_window_equal_duckdb_in_batch_and_streaming() {
    oracle_matches(SQL, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_rolled_up_from_windows_equal_duckdb_in_batch_and_streaming() {
    oracle_matches(TWO_STAGE_SQL, Some("two-stage")).await;
}

/// Runs `sql` in `volley batch` and streaming over dirty payments and compares both with
/// DuckDB's answer (`mode` is passed to the script).
async fn oracle_matches(sql: &str, mode: Option<&str>) {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let opts = GeneratorOptions {
        stream: GeneratorStream::Payments,
        rate: 20.0,
        riders: 12,
        seed: 11,
        disorder: std::time::Duration::from_secs(2),
        ..GeneratorOptions::default()
    };
    let data = generate_payments(&opts, 0, 3000);
    let input = dir.path().join("payments.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&input).unwrap(), data.schema(), None).unwrap();
    writer.write(&data).unwrap();
    writer.close().unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/duckdb_min_max.py");
    let oracle_file = dir.path().join("duckdb.parquet");
    succeed(
        Command::new(&python)
            .arg(&script)
            .arg(&input)
            .arg(&oracle_file)
            .args(mode),
    );
    let oracle = answer(&read_parquet(&oracle_file), "w_us");
    // The data is what makes this test worth running.
    let nan = |v: Option<f64>| v.is_some_and(f64::is_nan);
    let nan_windows = oracle.values().filter(|v| nan(v[1])).count();
    let mixed = oracle
        .values()
        .filter(|v| nan(v[1]) && v[0].is_some_and(|x| !x.is_nan()))
        .count();
    let infinite = oracle
        .values()
        .filter(|v| v[0] == Some(f64::NEG_INFINITY))
        .count();
    let zeros = oracle
        .values()
        .filter(|v| v[0] == Some(0.0) || v[1] == Some(0.0))
        .count();
    assert!(
        nan_windows > 20 && mixed > 20 && infinite > 5 && zeros > 5,
        "{nan_windows} {mixed} {infinite} {zeros}"
    );
    assert!(
        oracle.keys().any(|(user, _)| user.is_none()),
        "a NULL user group"
    );

    // `volley batch`, the binary.
    std::fs::write(dir.path().join("pipeline.sql"), sql).unwrap();
    volley_ok(dir.path(), &["batch", "pipeline.sql"]);
    assert_answers(
        "volley batch",
        &answer(&read_parquet(&dir.path().join("out/extremes")), "w"),
        &oracle,
    );

    // Streaming over the same rows, at each micro-batch size of the parity matrix.
    let cwd = std::env::current_dir().unwrap();
    let p = pipeline(&sql.replace("'payments.parquet'", &format!("'{}'", input.display()))).await;
    let source = rows(&p).await;
    assert_eq!(cwd, std::env::current_dir().unwrap());
    for (sizing, workers) in stream_sizings() {
        let opts = VerifyOptions {
            sizing: sizing.clone(),
            order: InputOrder::Shuffled,
            seed: 5,
            max_differences: 3,
            workers: Some(workers),
        };
        let (stream, _) = stream_outputs(&p, &ConnectorRegistry::builtin(), &source, &opts)
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = stream["extremes"]
            .iter()
            .flat_map(|(_, b)| b.iter().cloned())
            .collect();
        assert_answers(
            &format!("streaming {sizing:?}"),
            &answer(&batches, "w"),
            &oracle,
        );
    }
}

/// The micro-batch sizes of the parity matrix (1, 7, 8192, random 1..=300), each with a
/// number of workers from 1 to 4.
pub(crate) fn stream_sizings() -> [(BatchSizing, usize); 4] {
    [
        (BatchSizing::Fixed(1), 1),
        (BatchSizing::Fixed(7), 2),
        (BatchSizing::Fixed(8192), 3),
        (
            BatchSizing::Random {
                min: 1,
                max: 300,
                seed: 4,
            },
            4,
        ),
    ]
}

/// A CSV (`user_id,ts,amount`) of `rows` payments of 15 users over two hours, in no order:
/// 1% NaN, 0.5% each of +inf and -inf, 2% NULL amounts; `unique` gives each user's rows
/// distinct event times (else times repeat).
pub(crate) fn dirty_payments_csv(rows: u64, seed: u64, unique: bool) -> String {
    let mut csv = String::from("user_id,ts,amount\n");
    let mut state = seed;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % m
    };
    let mut seen = std::collections::HashSet::new();
    let mut written = 0;
    while written < rows {
        let user = next(15) + 1;
        let second = next(7200);
        if unique && !seen.insert((user, second)) {
            continue;
        }
        let amount = match next(1000) {
            0..10 => "NaN".to_string(),
            10..15 => "inf".to_string(),
            15..20 => "-inf".to_string(),
            20..40 => String::new(),
            v => format!("{}.{:02}", v as i64 - 300, next(100)),
        };
        csv.push_str(&format!(
            "{user},2026-01-01T{:02}:{:02}:{:02},{amount}\n",
            second / 3600,
            second / 60 % 60,
            second % 60
        ));
        written += 1;
    }
    csv
}

/// A 10-minute RANGE sum and average per user over amounts with NaN, ±inf and NULLs, in
/// `volley batch`, equal DuckDB's answer row by row: DataFusion's own sliding sum would answer
/// NaN for every later row of a user once a NaN had been in the frame.
#[test]
fn sliding_sums_over_nan_and_infinities_equal_duckdb_in_batch() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 4,000 payments of 15 users over two hours, in no order, with duplicate timestamps.
    let csv = dirty_payments_csv(4000, 0x9e37_79b9_7f4a_7c15, false);
    std::fs::write(dir.path().join("pay.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE EXTERNAL TABLE pay (user_id BIGINT, ts TIMESTAMP NOT NULL, amount DOUBLE)
           STORED AS CSV LOCATION 'pay.csv' OPTIONS ('watermark' 'ts - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE feats STORED AS PARQUET LOCATION 'out/feats';
         INSERT INTO feats
         SELECT user_id, ts, amount, sum(amount) OVER w AS s, avg(amount) OVER w AS a,
                count(amount) OVER w AS n
         FROM pay
         WINDOW w AS (PARTITION BY user_id ORDER BY ts
                      RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW);",
    )
    .unwrap();
    volley_ok(dir.path(), &["batch", "pipeline.sql"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/duckdb_sliding_sum.py");
    let out = succeed(
        Command::new(python)
            .arg(script)
            .arg(dir.path().join("pay.csv"))
            .arg(dir.path().join("out/feats")),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("4000 rows compared"), "{report}");
    let nan_sums: usize = report
        .split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (100..3000).contains(&nan_sums),
        "frames holding a NaN answer NaN, the others their sum: {report}"
    );
}

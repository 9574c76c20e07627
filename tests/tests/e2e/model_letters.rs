//! Rows `predict()` leaves out reach dead letters with their source position: the epoch and
//! `_epoch_row` read the record again, whatever filter, late rows or workers lay between.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use volley_connectors::{ConnectorRegistry, Sink, Source};
use volley_engine::driver::BatchSizing;
use volley_engine::memory::{CollectSink, VecSource};
use volley_engine::setup::{JobOverrides, build_stream_job};

use crate::harness::pipeline;
use crate::predict::repo;

const SEC: i64 = 1_000_000_000;

/// Source rows: `(ts seconds, x0, x1)`; row `i` has id `i`. A NULL input sends the row to
/// the model's dead letters (`null_policy` `dead_letter`, the default).
fn rows() -> Vec<(i64, Option<f64>, Option<f64>)> {
    let mut rows = Vec::new();
    for i in 0..60i64 {
        let ts = i;
        let x0 = if [3, 10, 11, 29, 44, 59].contains(&i) {
            None
        } else {
            Some((i % 16) as f64)
        };
        let x1 = if [5, 22, 45].contains(&i) {
            None
        } else {
            Some(i as f64 * 0.5)
        };
        rows.push((ts, x0, x1));
    }
    // Late rows (their 10-second window is emitted by then), each just before a failing row of
    // its epoch, so a position counted after the late rows left would be one too small.
    rows[43] = (2, Some(1.0), Some(1.0));
    rows[58] = (7, Some(2.0), Some(2.0));
    rows
}

fn batch(rows: &[(i64, Option<f64>, Option<f64>)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("x0", DataType::Float64, true),
        Field::new("x1", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r.0 * SEC),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// Every letter in `dir`: `(epoch, row)` JSON values.
fn letters(dir: &Path) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        all.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
    }
    all
}

#[tokio::test]
async fn model_letters_carry_the_source_position_through_filters_late_rows_and_workers() {
    let input = rows();
    for (size, workers) in [(7usize, 1usize), (7, 2), (1, 1), (13, 2), (60, 2)] {
        let model_letters = tempfile::tempdir().unwrap();
        let late_letters = tempfile::tempdir().unwrap();
        let sql = format!(
            "CREATE MODEL lookup LOCATION '{model}' OPTIONS ('dead_letter' '{models}');
             CREATE EXTERNAL TABLE s (id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, x0 DOUBLE, x1 DOUBLE)
               STORED AS CSV LOCATION 'unused.csv'
               OPTIONS ('watermark' 'ts', 'dead_letter' '{late}', 'max_dead_letters' '100%');
             CREATE EXTERNAL TABLE scored STORED AS BLACKHOLE LOCATION 'a';
             CREATE EXTERNAL TABLE windows STORED AS BLACKHOLE LOCATION 'b';
             INSERT INTO scored SELECT id, predict('lookup', x0, x1) AS v FROM s WHERE id % 3 <> 1;
             INSERT INTO windows SELECT date_bin(INTERVAL '10 seconds', ts) AS w, count(*) AS n, sum(v) AS total
               FROM (SELECT ts, predict('lookup', x0, x1) AS v FROM s)
               GROUP BY 1;",
            model = repo().join("udfs/tests/data/lookup.onnx").display(),
            models = model_letters.path().display(),
            late = late_letters.path().display(),
        );
        let p = pipeline(&sql).await;
        let source = batch(&input);
        let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
        sources.insert(
            "s".into(),
            Box::new(VecSource::new(source.schema(), vec![source])),
        );
        let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
        for name in ["scored", "windows"] {
            sinks.insert(name.into(), Box::new(CollectSink::new().0));
        }
        let overrides = JobOverrides {
            sources,
            sinks,
            sizing: Some(BatchSizing::Fixed(size)),
            workers: Some(workers),
            ..JobOverrides::default()
        };
        let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
            .await
            .unwrap();
        let summary = job.run().await.unwrap();
        let context = format!("{size}-row epochs, {workers} worker(s)");
        // Rows 43 and 58 are late unless one epoch holds them with the rows that close
        // their window.
        let late: BTreeSet<i64> = if size < 44 {
            [43, 58].into()
        } else {
            [].into()
        };
        assert_eq!(summary.late_rows, late.len() as u64, "{context}");

        // Each letter's epoch and _epoch_row name the source row whose id it carries back.
        let mut found: Vec<i64> = Vec::new();
        for letter in letters(model_letters.path()) {
            assert_eq!(letter["source"], "model_lookup", "{context}: {letter}");
            let row = &letter["row"];
            assert_eq!(row["_source_table"], "s", "{context}: {letter}");
            let epoch = letter["epoch"].as_i64().unwrap();
            let at = row["_epoch_row"]
                .as_i64()
                .unwrap_or_else(|| panic!("{context}: no _epoch_row in {letter}"));
            let id = (epoch - 1) * size as i64 + at;
            let record = input[usize::try_from(id).unwrap()];
            assert_eq!(row["x0"].as_f64(), record.1, "{context}: {letter}");
            assert_eq!(row["x1"].as_f64(), record.2, "{context}: {letter}");
            let reason = letter["reason"].as_str().unwrap();
            assert!(reason.contains("a NULL input"), "{context}: {reason}");
            found.push(id);
        }
        found.sort();
        // The filtered INSERT scores ids with id % 3 != 1; the windowed one every on-time row.
        let mut want = Vec::new();
        for (id, (_, x0, x1)) in input.iter().enumerate() {
            let id = id as i64;
            if x0.is_some() && x1.is_some() {
                continue;
            }
            if id % 3 != 1 {
                want.push(id);
            }
            if !late.contains(&id) {
                want.push(id);
            }
        }
        want.sort();
        assert_eq!(found, want, "{context}");
    }
}

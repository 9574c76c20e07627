//! `allowed_lateness`: a window keeps its state that long after it is emitted; a late row
//! within the bound corrects it (the corrected row is upserted into Delta), a later one is a
//! dead letter. The Delta table then equals batch over the rows within the bound, also when
//! the run is killed in the middle and restarted.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;

use crate::harness::pipeline;
use crate::process::{Kill, run, run_killed, volley_ok};
use crate::readers::{sink_rows, table_in};

/// `(ts seconds, key)` in file order. The watermark is the largest time so far (no delay), the
/// windows 10 s wide, the lateness 20 s. With one row per micro-batch, a row is judged
/// against the watermark of the rows before it.
/// `(ts seconds, key)` rows.
type Rows = Vec<(i64, i64)>;

/// All rows in file order, and the ones beyond the lateness bound.
fn events() -> (Rows, Rows) {
    let mut rows = Vec::new();
    let mut too_late = Vec::new();
    for t in (0..=100).step_by(3) {
        rows.push((t, t % 2 + 1));
        match t {
            // Watermark 45: [20,30) and [30,40) are emitted but kept; [10,20) is gone.
            45 => {
                rows.extend([(21, 1), (35, 2)]);
                rows.push((12, 2));
                too_late.push((12, 2));
            }
            // Watermark 60: [30,40) ends exactly where it is gone (60 - 20); [40,50) is kept.
            60 => {
                rows.push((39, 2));
                too_late.push((39, 2));
                rows.push((40, 1));
            }
            // Watermark 75: [50,60) is kept, [40,50) is gone.
            75 => {
                rows.extend([(50, 1), (51, 2)]);
                rows.push((44, 1));
                too_late.push((44, 1));
            }
            _ => {}
        }
    }
    (rows, too_late)
}

fn csv(rows: &[(i64, i64)]) -> String {
    let mut text = String::from("ts,k,v\n");
    for (i, (t, k)) in rows.iter().enumerate() {
        text.push_str(&format!(
            "2026-01-01T00:{:02}:{:02},{k},{i}\n",
            t / 60,
            t % 60
        ));
    }
    text
}

fn sql(input: &str, sink: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE events (ts TIMESTAMP NOT NULL, k BIGINT NOT NULL, v BIGINT NOT NULL)
         STORED AS CSV LOCATION '{input}'
         OPTIONS ('watermark' 'ts', 'max_rows' '1', 'dead_letter' 'letters',
                  'replay_order' 'file', 'max_dead_letters' '100%');
         CREATE EXTERNAL TABLE w STORED AS DELTA LOCATION '{sink}'
         OPTIONS ('merge_key' 'k, start', 'allowed_lateness' '20 seconds');
         INSERT INTO w SELECT k, date_bin(INTERVAL '10 seconds', ts) AS start, count(*) AS n, sum(v) AS total
         FROM events GROUP BY 1, 2;"
    )
}

/// `(k, start µs)` → `(n, total)` of the Delta table `name` in `dir`.
async fn table(dir: &Path, sql: &str, name: &str) -> BTreeMap<(i64, i64), (i64, i64)> {
    let p = pipeline(sql).await;
    let decl = table_in(&p, name, dir);
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("k", DataType::Int64, false),
        arrow::datatypes::Field::new(
            "start",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
        arrow::datatypes::Field::new("n", DataType::Int64, false),
        arrow::datatypes::Field::new("total", DataType::Int64, true),
    ]));
    let batches: Vec<RecordBatch> = sink_rows(&decl, &schema).await;
    let mut out = BTreeMap::new();
    for b in &batches {
        let col = |i: usize| cast(b.column(i), &DataType::Int64).unwrap();
        let (k, s, n, t) = (col(0), col(1), col(2), col(3));
        let (k, s, n, t) = (
            k.as_primitive::<Int64Type>(),
            s.as_primitive::<Int64Type>(),
            n.as_primitive::<Int64Type>(),
            t.as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            assert!(s.is_valid(i));
            let before = out.insert((k.value(i), s.value(i)), (n.value(i), t.value(i)));
            assert!(before.is_none(), "one row per window and key in {name}");
        }
    }
    out
}

fn letters(dir: &Path) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for f in dir.join("letters").read_dir().unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                letter["reason"].as_str().unwrap().starts_with("late"),
                "{letter}"
            );
            let ts = letter["row"]["ts"].as_str().unwrap();
            let (m, s) = (&ts[14..16], &ts[17..19]);
            let t = m.parse::<i64>().unwrap() * 60 + s.parse::<i64>().unwrap();
            out.push((t, letter["row"]["k"].as_i64().unwrap()));
        }
    }
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_within_the_bound_correct_delta_and_later_ones_are_dead_letters() {
    let (rows, mut too_late) = events();
    too_late.sort_unstable();
    // Rows are told apart by position (an on-time row may share a late row's time and key).
    let late_at: Vec<usize> = {
        let mut at = Vec::new();
        for late in &too_late {
            let i = rows.iter().rposition(|r| r == late).unwrap();
            at.push(i);
        }
        at
    };
    for kill in [None, Some(25), Some(41)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.csv"), csv(&rows)).unwrap();
        std::fs::write(
            dir.path().join("pipeline.sql"),
            sql("events.csv", "out/stream"),
        )
        .unwrap();
        // Batch over the rows within the bound: what the corrected table must hold.
        let kept_csv: String = csv(&rows)
            .lines()
            .enumerate()
            .filter(|(i, _)| *i == 0 || !late_at.contains(&(i - 1)))
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(dir.path().join("kept.csv"), kept_csv).unwrap();
        let batch_sql = sql("kept.csv", "out/batch")
            .replace("'dead_letter' 'letters'", "'dead_letter' 'batch_letters'");
        std::fs::write(dir.path().join("batch.sql"), &batch_sql).unwrap();
        volley_ok(dir.path(), &["batch", "batch.sql"]);

        if let Some(n) = kill {
            let spec = format!("after_sink_commit_before_checkpoint:{n}");
            assert!(
                run_killed(dir.path(), Some(&Kill::At(spec))),
                "killed at epoch {n}"
            );
        }
        let out = run(dir.path(), None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        if kill.is_none() {
            let told = String::from_utf8_lossy(&out.stdout);
            assert!(told.contains("3 late rows sent to dead letters"), "{told}");
            assert!(told.contains("windows corrected by late rows"), "{told}");
        }
        let stream = table(dir.path(), &sql("events.csv", "out/stream"), "w").await;
        let batch = table(dir.path(), &batch_sql, "w").await;
        assert!(batch.len() > 15, "{batch:?}");
        assert_eq!(stream, batch, "killed at {kill:?}");
        assert_eq!(letters(dir.path()), too_late, "killed at {kill:?}");
    }
}

//! Window edges, late rows and one-row micro-batches, written as small tables of data.

use std::collections::HashMap;

use arrow::array::{Int64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use volley_connectors::{ConnectorRegistry, Sink, Source};
use volley_engine::driver::BatchSizing;
use volley_engine::memory::{CollectSink, VecSource};
use volley_engine::setup::{JobOverrides, build_stream_job};

use crate::harness::pipeline;

const SEC: i64 = 1_000_000_000;

use crate::harness::clicks as events;

/// (window start seconds, count) per emitting epoch.
fn emitted(epochs: &[(u64, Vec<RecordBatch>)]) -> Vec<(u64, Vec<(i64, i64)>)> {
    epochs
        .iter()
        .map(|(epoch, batches)| {
            let mut rows = Vec::new();
            for b in batches {
                let w = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .unwrap();
                let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                for i in 0..b.num_rows() {
                    rows.push((w.value(i) / SEC, n.value(i)));
                }
            }
            rows.sort_unstable();
            (*epoch, rows)
        })
        .collect()
}

#[tokio::test]
async fn window_closes_exactly_when_watermark_reaches_its_end_and_late_rows_are_dead_lettered() {
    let dead = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'unused.csv'
         OPTIONS ('watermark' 'ts - INTERVAL ''5 seconds''', 'dead_letter' '{}', 'max_dead_letters' '100%');
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x';
         INSERT INTO out SELECT date_bin(INTERVAL '10 seconds', ts) AS w, count(*) AS n FROM clicks GROUP BY 1;",
        dead.path().display()
    );
    let p = pipeline(&sql).await;
    // Epochs of one row each: 0s, 9s, 15s (watermark = 10s = end of [0,10)), 9s again (late), 30s.
    let input = events(&[(0, 1), (9, 2), (15, 3), (9, 4), (30, 5)]);
    let (sink, collected) = CollectSink::new();
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    sources.insert(
        "clicks".into(),
        Box::new(VecSource::new(input.schema(), vec![input])),
    );
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    sinks.insert("out".into(), Box::new(sink));
    let overrides = JobOverrides {
        sources,
        sinks,
        sizing: Some(BatchSizing::Fixed(1)),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let summary = job.run().await.unwrap();

    let got = emitted(&collected.lock().unwrap());
    assert_eq!(
        got,
        vec![(3, vec![(0, 2)]), (5, vec![(10, 1)]), (6, vec![(30, 1)])]
    );
    assert_eq!(summary.late_rows, 1);
    let letters: Vec<String> = std::fs::read_dir(dead.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let all = letters.concat();
    assert_eq!(all.lines().count(), 1, "{all}");
    // The dead letter holds the whole source record (user_id too, which the query does not
    // read) and its position: epoch 4's first row.
    let letter: serde_json::Value = serde_json::from_str(all.trim()).unwrap();
    assert_eq!(letter["epoch"], 4, "{all}");
    // The reason names the window that found it late.
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("late: its window had already been emitted (window ")
            && reason.contains("INSERT INTO"),
        "{all}"
    );
    assert_eq!(letter["row"]["ts"], "1970-01-01T00:00:09", "{all}");
    assert_eq!(letter["row"]["user_id"], 4, "{all}");
    assert_eq!(letter["row"]["_epoch_row"], 0, "{all}");
}

#[tokio::test]
async fn empty_input_emits_nothing_and_keyed_aggregates_upsert_per_epoch() {
    let sql = "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'unused.csv'
         OPTIONS ('watermark' 'ts');
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'user_id');
         INSERT INTO out SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;";
    let p = pipeline(sql).await;
    let input = events(&[(0, 1), (1, 2), (2, 1), (3, 1)]);
    let (sink, collected) = CollectSink::new();
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    sources.insert(
        "clicks".into(),
        Box::new(VecSource::new(input.schema(), vec![input])),
    );
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    sinks.insert("out".into(), Box::new(sink));
    let overrides = JobOverrides {
        sources,
        sinks,
        sizing: Some(BatchSizing::Fixed(2)),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    job.run().await.unwrap();
    // Epoch 1 touches users 1 and 2; epoch 2 touches only user 1 (upsert to 3).
    let got: Vec<(u64, Vec<(i64, i64)>)> = collected
        .lock()
        .unwrap()
        .iter()
        .map(|(e, batches)| (*e, crate::harness::int_pairs(batches)))
        .collect();
    assert_eq!(got, vec![(1, vec![(1, 1), (2, 1)]), (2, vec![(1, 3)])]);
}

#[tokio::test]
async fn a_hop_window_closes_at_its_end_and_a_row_of_an_emitted_window_is_dead_lettered() {
    let dead = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'unused.csv'
         OPTIONS ('watermark' 'ts', 'dead_letter' '{}', 'max_dead_letters' '100%');
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x';
         INSERT INTO out SELECT w, count(*) AS n
         FROM (SELECT unnest(hop(ts, INTERVAL '5 seconds', INTERVAL '10 seconds')) AS w FROM clicks) t
         GROUP BY w;",
        dead.path().display()
    );
    let p = pipeline(&sql).await;
    // One row per epoch; the watermark is the newest time. At 12 s window [0, 10) has been
    // emitted, so the row at 6 s (also in the open [5, 15)) is late for a window it belongs to.
    let input = events(&[(0, 1), (7, 2), (12, 3), (6, 4), (14, 5), (30, 6)]);
    let (sink, collected) = CollectSink::new();
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    sources.insert(
        "clicks".into(),
        Box::new(VecSource::new(input.schema(), vec![input])),
    );
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    sinks.insert("out".into(), Box::new(sink));
    let overrides = JobOverrides {
        sources,
        sinks,
        sizing: Some(BatchSizing::Fixed(1)),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let summary = job.run().await.unwrap();
    let got = emitted(&collected.lock().unwrap());
    // [-5, 5) once 7 s is seen, [0, 10) at 12 s, [5, 15) and [10, 20) at 30 s, the rest at the end.
    assert_eq!(
        &got[..3],
        &[
            (2, vec![(-5, 1)]),
            (3, vec![(0, 2)]),
            (6, vec![(5, 3), (10, 2)])
        ]
    );
    let rest: Vec<(i64, i64)> = got[3..].iter().flat_map(|(_, r)| r.clone()).collect();
    assert_eq!(rest, [(25, 1), (30, 1)]);
    assert_eq!(summary.late_rows, 1);
    let all: String = std::fs::read_dir(dead.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let letter: serde_json::Value = serde_json::from_str(all.trim()).unwrap();
    assert_eq!(letter["row"]["user_id"], 4, "{all}");
    assert!(
        letter["reason"].as_str().unwrap().contains("window w"),
        "{all}"
    );
}

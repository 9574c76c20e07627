//! Aggregates over aggregates: a query's inner windowed aggregate feeds the next, which
//! closes its own windows by where the inner one's emitted windows have got to. Streaming
//! equals batch at every micro-batch size and order, and across failures and restores.

use volley_engine::driver::BatchSizing;
use volley_engine::verify::InputOrder;

use crate::harness::{assert_exact, parity, pipeline, refusal, rows};

/// Two-stage, three-stage (5-second windows over 2-second ones: an outer window may end
/// inside an inner one), keyed-over-windowed and a UNION ALL of two aggregates under one (also
/// with one side that never emits, so the other's last windows arrive on their own),
/// over rides (hot cells, duplicate times, rows on window edges).
fn rides_sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'disorder' '2 seconds', 'cities' '6',
         'riders' '50', 'watermark' 'event_time - INTERVAL ''3 seconds''');

CREATE EXTERNAL TABLE by_region STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE three_stage STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE busiest STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'region');
CREATE EXTERNAL TABLE halves STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE one_sided STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO by_region
SELECT substr(cell, 1, 2) AS region, date_bin(INTERVAL '10 seconds', w) AS w10,
       sum(n) AS n, max(riders) AS peak_riders, count(*) AS cells, min(w) AS first_window
FROM (SELECT geohash(lat, lon, 3) AS cell, date_bin(INTERVAL '2 seconds', event_time) AS w,
             count(*) AS n, count(DISTINCT rider_id) AS riders
      FROM rides GROUP BY 1, 2) AS per_cell
WHERE n > 1
GROUP BY 1, 2;

INSERT INTO three_stage
SELECT date_bin(INTERVAL '15 seconds', w5) AS w15, max(cells) AS most_cells, sum(n) AS n
FROM (SELECT date_bin(INTERVAL '5 seconds', w) AS w5, count(*) AS cells, sum(n) AS n
      FROM (SELECT geohash(lat, lon, 4) AS cell, date_bin(INTERVAL '2 seconds', event_time) AS w,
                   count(*) AS n
            FROM rides GROUP BY 1, 2) AS a
      GROUP BY 1) AS b
GROUP BY 1;

INSERT INTO busiest
SELECT region, max(n) AS peak, count(*) AS windows, sum(n) AS total
FROM (SELECT geohash(lat, lon, 2) AS region, date_bin(INTERVAL '5 seconds', event_time) AS w,
             count(*) AS n
      FROM rides GROUP BY 1, 2) AS t
GROUP BY region;

INSERT INTO halves
SELECT date_bin(INTERVAL '10 seconds', w) AS w10, half, sum(n) AS n, count(*) AS windows
FROM (SELECT date_bin(INTERVAL '2 seconds', event_time) AS w, 'even' AS half, count(*) AS n
      FROM rides WHERE rider_id % 2 = 0 GROUP BY 1
      UNION ALL
      SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, 'odd' AS half, count(*) AS n
      FROM rides WHERE rider_id % 2 = 1 GROUP BY 1) AS u
GROUP BY 1, 2;

INSERT INTO one_sided
SELECT date_bin(INTERVAL '10 seconds', w) AS w10, sum(n) AS n
FROM (SELECT date_bin(INTERVAL '2 seconds', event_time) AS w, count(*) AS n
      FROM rides GROUP BY 1
      UNION ALL
      SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, count(*) AS n
      FROM rides WHERE rider_id < 0 GROUP BY 1) AS u
GROUP BY 1;
"#
    )
}

/// Payments as real data holds them (NULL users, times and amounts, NaN, ±0, ±inf), rolled up
/// from per-user windows into wider ones.
fn payments_sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');

CREATE EXTERNAL TABLE rollup STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE peak_user STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO rollup
SELECT date_bin(INTERVAL '6 seconds', w) AS w6, count(*) AS users, count(user_id) AS known,
       sum(n) AS n, max(hi) AS hi, min(lo) AS lo, sum(priced) AS priced
FROM (SELECT user_id, date_bin(INTERVAL '2 seconds', event_time) AS w, count(*) AS n,
             count(amount) AS priced, max(amount) AS hi, min(amount) AS lo
      FROM payments GROUP BY 1, 2) AS per_user
GROUP BY 1;

-- Grouped by the inner window column itself: the same 2-second windows, one row each.
INSERT INTO peak_user
SELECT w, max(n) AS peak, count(*) AS users, max(hi) AS hi, min(user_id) AS first_user
FROM (SELECT user_id, date_bin(INTERVAL '2 seconds', event_time) AS w, count(*) AS n,
             max(amount) AS hi
      FROM payments GROUP BY 1, 2) AS per_user
GROUP BY w;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_over_aggregates_equal_batch_over_sizes_orders_and_workers() {
    for seed in 0..6u64 {
        for (sizing, count) in [
            (BatchSizing::Fixed(1), 150),
            (BatchSizing::Fixed(7), 700),
            (BatchSizing::Fixed(8192), 700),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 300,
                    seed: seed + 3,
                },
                700,
            ),
        ] {
            for (text, sinks) in [(rides_sql(seed, count), 5), (payments_sql(seed, count), 2)] {
                let p = pipeline(&text).await;
                let input = rows(&p).await;
                for order in [InputOrder::InOrder, InputOrder::Shuffled] {
                    let workers = 1 + (seed as usize) % 4;
                    let report = parity(&p, &input, sizing.clone(), order, seed, workers).await;
                    let context = format!("seed {seed}, {sizing:?}, {order:?}, {workers} workers");
                    assert_exact(&report, &context);
                    assert_eq!(report.sinks.len(), sinks);
                    assert!(
                        report.sinks.iter().all(|s| s.total > 0),
                        "{context}: every sink got rows: {report:?}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_over_aggregates_restore_their_inner_state_and_match_batch() {
    let sql = payments_sql(21, 3000).replace("'rate' '20'", "'rate' '50'");
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    crate::recovery::failed_runs_restore_and_match_batch(
        &sql,
        "payments",
        &["rollup", "peak_user"],
        &schedules,
    )
    .await;
}

#[tokio::test]
async fn an_aggregate_over_a_keyed_aggregate_is_refused_naming_the_rewrite() {
    let message = refusal(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'n');
INSERT INTO out
SELECT n, count(*) AS riders FROM (SELECT rider_id, count(*) AS n FROM rides GROUP BY rider_id) AS t
GROUP BY n;
"#,
    )
    .await
    .expect("refused");
    assert!(
        message.contains("an aggregate over a keyed aggregate")
            && message.contains("rider_id")
            && message.contains("window the inner aggregate"),
        "{message}"
    );
}

#[tokio::test]
async fn a_window_over_an_aggregate_must_be_over_its_window_column() {
    let message = refusal(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO out
SELECT date_bin(INTERVAL '1 minute', last_seen) AS w, count(*) AS riders
FROM (SELECT rider_id, date_bin(INTERVAL '10 seconds', event_time) AS w10,
             max(event_time) AS last_seen
      FROM rides GROUP BY 1, 2) AS t
GROUP BY 1;
"#,
    )
    .await
    .expect("refused");
    assert!(
        message.contains("must be over that aggregate's own window column")
            && message.contains("last_seen"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_aggregates_over_aggregates_stays_flat_over_many_windows() {
    use volley_connectors::ConnectorRegistry;
    use volley_engine::checkpoint::manifest::Manifest;
    use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
    use volley_engine::setup::{JobOverrides, build_stream_job};

    // 200 s of events: 100 inner and 20 outer windows, while a few are open at any time.
    let sql = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '20000', 'rate' '100', 'seed' '3', 'disorder' '2 seconds', 'cities' '6',
         'riders' '50', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE by_region STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO by_region
SELECT substr(cell, 1, 2) AS region, date_bin(INTERVAL '10 seconds', w) AS w10, sum(n) AS n
FROM (SELECT geohash(lat, lon, 4) AS cell, date_bin(INTERVAL '2 seconds', event_time) AS w,
             count(*) AS n
      FROM rides GROUP BY 1, 2) AS per_cell
GROUP BY 1, 2;
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(sql).await;
    let overrides = JobOverrides {
        sizing: Some(BatchSizing::Fixed(200)),
        checkpoint: Some(CheckpointConfig {
            dir: dir.path().display().to_string(),
            interval: CheckpointInterval::Epochs(2),
            keep: 10_000,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let summary = job.run().await.unwrap();
    assert!(summary.windows_emitted > 100, "{summary:?}");
    let mut held: Vec<(u64, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("checkpoints")).unwrap() {
        let path = entry.unwrap().path().join("manifest.json");
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let query = &manifest.queries[0];
        let names: Vec<&str> = query
            .operators
            .iter()
            .map(|o| o.operator.as_str())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "both aggregates' state is checkpointed, by name: {names:?}"
        );
        let rows = query.state_rows;
        assert_eq!(
            rows,
            query
                .operators
                .iter()
                .flat_map(|o| &o.state)
                .map(|s| s.rows)
                .sum::<u64>()
        );
        held.push((manifest.epoch, rows));
    }
    held.sort_unstable();
    assert!(held.len() > 40, "{} checkpoints", held.len());
    // After the first tenth (warm-up), state never exceeds twice what it held then.
    let warm = held.len() / 10;
    let bound = held[warm..2 * warm].iter().map(|(_, r)| *r).max().unwrap();
    assert!(bound > 0, "{held:?}");
    let peak = held[warm..].iter().map(|(_, r)| *r).max().unwrap();
    assert!(
        peak <= 2 * bound,
        "state grew: warm-up {bound}, later {peak}: {held:?}"
    );
}

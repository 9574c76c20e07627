//! Windowed joins of two streams: rides and payments (NULL users, times and amounts, NaN,
//! ±0, ±inf; duplicate times; rows on window edges), each grouped or bucketed by the same
//! tumbling window and joined on it. Streaming equals batch at every micro-batch size, order
//! and worker count, across failures and restores, with state bounded by the open windows.

use volley_engine::driver::BatchSizing;
use volley_engine::verify::InputOrder;

use crate::harness::{Sweep, assert_exact, pipeline, refusal, rows, sweep};

const SINKS: [&str; 5] = ["per_window", "bucketed", "outer", "counted", "semi"];

fn sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '30', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE per_window STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE bucketed STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE outer STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE counted STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE semi STORED AS BLACKHOLE LOCATION 'x';

-- Two windowed aggregates joined on their window and key.
INSERT INTO per_window
SELECT r.w, r.rider_id, r.rides, p.paid, p.n, p.top
FROM (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, rider_id, count(*) AS rides
      FROM rides GROUP BY 1, 2) r
JOIN (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, user_id, sum(amount) AS paid,
             count(*) AS n, max(amount) AS top
      FROM payments GROUP BY 1, 2) p
  ON r.w = p.w AND r.rider_id = p.user_id;

-- Raw rows bucketed by the same window on both sides.
INSERT INTO bucketed
SELECT r.request_id, p.payment_id, p.amount
FROM rides r JOIN payments p
  ON date_bin(INTERVAL '5 seconds', r.event_time) = date_bin(INTERVAL '5 seconds', p.event_time)
 AND r.rider_id = p.user_id
WHERE p.channel % 3 = 0;

-- FULL join of aggregates: windows or keys only one side has come out too.
INSERT INTO outer
SELECT coalesce(r.w, p.w) AS w, r.rider_id, p.user_id, r.rides, p.n
FROM (SELECT date_bin(INTERVAL '4 seconds', event_time) AS w, rider_id, count(*) AS rides
      FROM rides WHERE rider_id < 12 GROUP BY 1, 2) r
FULL JOIN (SELECT date_bin(INTERVAL '4 seconds', event_time) AS w, user_id, count(*) AS n
           FROM payments WHERE user_id > 5 GROUP BY 1, 2) p
  ON r.w = p.w AND r.rider_id = p.user_id;

-- LEFT join of a window's rows with a windowed aggregate, and a condition beyond the keys.
INSERT INTO counted
SELECT r.request_id, r.rider_id, p.n
FROM (SELECT request_id, rider_id, date_bin(INTERVAL '6 seconds', event_time) AS w FROM rides) r
LEFT JOIN (SELECT date_bin(INTERVAL '6 seconds', event_time) AS w, user_id, count(*) AS n
           FROM payments GROUP BY 1, 2) p
  ON r.w = p.w AND r.rider_id = p.user_id AND p.n > 1;

-- A semi-join within the window.
INSERT INTO semi
SELECT r.request_id FROM rides r
WHERE EXISTS (SELECT 1 FROM payments p
              WHERE date_bin(INTERVAL '3 seconds', p.event_time) = date_bin(INTERVAL '3 seconds', r.event_time)
                AND p.user_id = r.rider_id);
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_joins_equal_batch_over_sizes_orders_and_workers() {
    let run = Sweep {
        seeds: 4,
        small: 150,
        rows: 700,
        random_seed: 7,
        sinks: Some(SINKS.len()),
    };
    sweep(run, sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_joins_restore_and_match_batch() {
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    crate::recovery::failed_runs_restore_and_match_batch(
        &sql(13, 3000),
        "rides",
        &SINKS,
        &schedules,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_join_state_stays_flat_over_many_windows() {
    use volley_connectors::ConnectorRegistry;
    use volley_engine::checkpoint::manifest::Manifest;
    use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
    use volley_engine::setup::{JobOverrides, build_stream_job};

    // 200 s of events in 2-second windows: 100 windows, a few open at a time. One source
    // joined with itself, so both sides advance together.
    let text = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '20000', 'rate' '100', 'seed' '3', 'disorder' '2 seconds', 'riders' '50',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE joined STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO joined
SELECT a.request_id, b.request_id AS other
FROM rides a JOIN rides b
  ON date_bin(INTERVAL '2 seconds', a.event_time) = date_bin(INTERVAL '2 seconds', b.event_time)
 AND a.rider_id = b.rider_id AND a.request_id < b.request_id;
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(text).await;
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
    assert!(summary.windows_emitted >= 100, "{summary:?}");
    let mut held: Vec<(u64, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("checkpoints")).unwrap() {
        let path = entry.unwrap().path().join("manifest.json");
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let join = &manifest.queries[0].operators[0];
        assert!(
            join.operator.starts_with("joined#join-"),
            "{}",
            join.operator
        );
        held.push((manifest.epoch, join.state.iter().map(|s| s.rows).sum()));
    }
    held.sort_unstable();
    assert!(held.len() > 40, "{} checkpoints", held.len());
    let warm = held.len() / 10;
    let bound = held[warm..2 * warm].iter().map(|(_, r)| *r).max().unwrap();
    assert!(bound > 0, "{held:?}");
    let peak = held[warm..].iter().map(|(_, r)| *r).max().unwrap();
    assert!(
        peak <= 2 * bound,
        "state grew: warm-up {bound}, later {peak}: {held:?}"
    );
}

#[tokio::test]
async fn joins_of_streams_that_cannot_stream_are_refused_with_the_rewrite() {
    let head = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''1 second''');
CREATE EXTERNAL TABLE o STORED AS BLACKHOLE LOCATION 'x';
"#;
    for (query, expected) in [
        (
            "SELECT r.request_id, p.payment_id FROM rides r JOIN payments p ON r.rider_id = p.user_id",
            "needs both sides in the same tumbling window",
        ),
        (
            "SELECT r.request_id FROM rides r JOIN payments p ON date_bin(INTERVAL '5 seconds', r.event_time) = date_bin(INTERVAL '10 seconds', p.event_time)",
            "must use the same window",
        ),
        (
            "SELECT r.request_id FROM rides r JOIN payments p ON r.rider_id = p.user_id AND p.event_time >= r.event_time",
            "or a bounded interval between their event times",
        ),
        (
            "SELECT r.request_id FROM rides r FULL JOIN payments p ON r.rider_id = p.user_id AND p.event_time BETWEEN r.event_time AND r.event_time + INTERVAL '5 seconds'",
            "INNER or LEFT join",
        ),
        (
            "SELECT r.rider_id, count(*) FROM rides r JOIN payments p ON date_bin(INTERVAL '5 seconds', r.event_time) = date_bin(INTERVAL '5 seconds', p.event_time) GROUP BY 1",
            "is streamed when it is windowed by the join's rows' time",
        ),
        (
            "SELECT date_bin(INTERVAL '5 seconds', r.event_time) AS w, count(*) FROM rides r JOIN payments p ON date_bin(INTERVAL '5 seconds', r.event_time) = date_bin(INTERVAL '5 seconds', p.event_time) GROUP BY 1",
            "must be over the time the join bounds",
        ),
        (
            "SELECT w, count(*) FROM (SELECT unnest(hop(r.event_time, INTERVAL '1 second', INTERVAL '5 seconds')) AS w FROM rides r JOIN payments p ON r.rider_id = p.user_id AND p.event_time BETWEEN r.event_time AND r.event_time + INTERVAL '5 seconds') t GROUP BY w",
            "hop windows over a join of two streams' rows are not streamed yet",
        ),
        (
            "SELECT r.rider_id, p.n FROM (SELECT rider_id, count(*) AS c FROM rides GROUP BY 1) r JOIN (SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, user_id, count(*) AS n FROM payments GROUP BY 1, 2) p ON r.rider_id = p.user_id",
            "same tumbling window",
        ),
    ] {
        let why = refusal(&format!("{head}INSERT INTO o {query};"))
            .await
            .unwrap_or_else(|| panic!("not refused: {query}"));
        assert!(why.contains(expected), "{query}: {why}");
    }
}

/// Interval joins: payments within a time range of a ride by the same rider (a window
/// either side, strict and inclusive bounds, and a range entirely after the ride).
fn interval_sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '30', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE around STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE after STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE maybe STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE paid_then STORED AS BLACKHOLE LOCATION 'x';
-- LEFT with payments (NULL times among them) preserved: a row with no time matches
-- nothing and is kept, with NULLs.
INSERT INTO paid_then
SELECT p.payment_id, p.event_time, r.request_id
FROM payments p LEFT JOIN rides r
  ON r.rider_id = p.user_id
 AND r.event_time BETWEEN p.event_time AND p.event_time + INTERVAL '2 seconds';
INSERT INTO maybe
SELECT r.request_id, p.payment_id, p.amount
FROM rides r LEFT JOIN payments p
  ON r.rider_id = p.user_id AND p.channel % 4 = 1
 AND p.event_time BETWEEN r.event_time - INTERVAL '1 second' AND r.event_time + INTERVAL '3 seconds';
INSERT INTO around
SELECT r.request_id, p.payment_id, p.amount, r.event_time
FROM rides r JOIN payments p
  ON r.rider_id = p.user_id
 AND p.event_time BETWEEN r.event_time - INTERVAL '2 seconds' AND r.event_time + INTERVAL '5 seconds';
INSERT INTO after
SELECT r.request_id, p.payment_id
FROM payments p JOIN rides r
  ON r.rider_id = p.user_id AND p.event_time > r.event_time
 AND p.event_time < r.event_time + INTERVAL '1500 ms' AND p.amount > 0;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_equal_batch_over_sizes_orders_and_workers() {
    let run = Sweep {
        seeds: 4,
        small: 150,
        rows: 600,
        random_seed: 9,
        sinks: None,
    };
    sweep(run, interval_sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_joins_restore_and_match_batch() {
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    crate::recovery::failed_runs_restore_and_match_batch(
        &interval_sql(17, 3000),
        "rides",
        &["maybe", "paid_then", "around", "after"],
        &schedules,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_join_state_stays_flat() {
    // 200 s of rides joined with the rides of the same rider in the next 4 seconds: 50x more
    // time than the interval.
    let text = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '20000', 'rate' '100', 'seed' '3', 'disorder' '2 seconds', 'riders' '50',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE joined STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO joined
SELECT a.request_id, b.request_id AS next
FROM rides a JOIN rides b
  ON a.rider_id = b.rider_id AND b.event_time > a.event_time
 AND b.event_time <= a.event_time + INTERVAL '4 seconds';
"#;
    crate::harness::assert_state_flat(text, u64::MAX).await;
}

/// Rides joined with the payments of the same rider, with neither a shared window nor an
/// interval: `bound` is added to each join (empty when the sinks' `state_ttl` bounds them).
fn ttl_sql(seed: u64, count: u64, sink_options: &str, bound: &str) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '30', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE paid STORED AS BLACKHOLE LOCATION 'x' {sink_options};
CREATE EXTERNAL TABLE maybe_paid STORED AS BLACKHOLE LOCATION 'x' {sink_options};
INSERT INTO paid
SELECT r.request_id, p.payment_id, p.amount
FROM rides r JOIN payments p ON r.rider_id = p.user_id {bound};
INSERT INTO maybe_paid
SELECT r.request_id, r.event_time, p.payment_id
FROM rides r LEFT JOIN payments p ON r.rider_id = p.user_id AND p.amount > 0 {bound};
"#
    )
}

/// With the sinks' `state_ttl`, the unbounded join streams as the join of rows at most the
/// TTL apart in event time: exactly the batch rows of the same join with that interval
/// written out, at every micro-batch size and order, and fewer rows than the unbounded batch
/// join (so the bound is real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_bounded_by_state_ttl_streams_the_join_of_rows_that_close_in_time() {
    use std::collections::BTreeMap;
    use volley_connectors::ConnectorRegistry;
    use volley_engine::batch::batch_outputs;
    use volley_engine::verify::{VerifyOptions, compare_outputs, stream_outputs};

    let explicit_bound = "AND p.event_time BETWEEN r.event_time - INTERVAL '3 seconds' AND r.event_time + INTERVAL '3 seconds'";
    let total = |out: &BTreeMap<String, Vec<arrow::array::RecordBatch>>, sink: &str| -> usize {
        out[sink].iter().map(|b| b.num_rows()).sum()
    };
    for seed in 0..3u64 {
        for (sizing, count) in [
            (BatchSizing::Fixed(1), 150),
            (BatchSizing::Fixed(7), 600),
            (BatchSizing::Fixed(8192), 600),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 300,
                    seed: seed + 5,
                },
                600,
            ),
        ] {
            let ttl = pipeline(&ttl_sql(
                seed,
                count,
                "OPTIONS ('state_ttl' '3 seconds')",
                "",
            ))
            .await;
            let written = pipeline(&ttl_sql(seed, count, "", explicit_bound)).await;
            let input = rows(&ttl).await;
            let expected = batch_outputs(&written, &input).await.unwrap();
            let unbounded = batch_outputs(&ttl, &input).await.unwrap();
            assert!(
                total(&unbounded, "paid") > total(&expected, "paid"),
                "seed {seed}: the unbounded join has pairs further apart than the TTL"
            );
            for order in [InputOrder::InOrder, InputOrder::Shuffled] {
                let workers = 1 + (seed as usize) % 3;
                let opts = VerifyOptions {
                    sizing: sizing.clone(),
                    order,
                    seed,
                    max_differences: 5,
                    workers: Some(workers),
                };
                let (stream, plans) =
                    stream_outputs(&ttl, &ConnectorRegistry::builtin(), &input, &opts)
                        .await
                        .unwrap();
                let report = compare_outputs(&written, &plans, &expected, &stream, 5).unwrap();
                let context = format!("seed {seed}, {sizing:?}, {order:?}, {workers} workers");
                assert_exact(&report, &context);
                assert!(
                    report.sinks.iter().all(|s| s.total > 0),
                    "{context}: every sink got rows: {report:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_state_ttl_join_needs_each_side_to_output_its_event_time() {
    let text = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''1 second''');
CREATE EXTERNAL TABLE o STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('state_ttl' '1 minute');
INSERT INTO o
SELECT r.request_id, p.payment_id
FROM rides r JOIN (SELECT payment_id, user_id FROM payments) p ON r.rider_id = p.user_id;
"#;
    let why = crate::harness::try_plans(&pipeline(text).await)
        .await
        .expect_err("a side without its event time cannot be bounded by time");
    assert!(
        why.contains(
            "its right side (payments) does not output its event-time column ('event_time')"
        ),
        "{why}"
    );
}

/// A TTL longer than the whole input joins every pair, so the stream equals the unbounded
/// batch join through failures and restores (held rows come back from the checkpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_bounded_by_state_ttl_restores_and_matches_batch() {
    let schedules = [(vec![300, 900], 2, vec![1, 2, 3])];
    crate::recovery::failed_runs_restore_and_match_batch(
        &ttl_sql(23, 1200, "OPTIONS ('state_ttl' '1 hour')", ""),
        "rides",
        &["paid", "maybe_paid"],
        &schedules,
    )
    .await;
}

/// Aggregates over joins of two streams, windowed by the time the join finalises its rows: a
/// windowed join's window (grouped as it is, and rolled up), either event time of an
/// interval join (INNER and LEFT), and two stages over one (Nexmark q4's shape).
fn aggregated_join_sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '30', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE window_totals STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE rolled STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE by_ride_time STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE by_payment_time STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE unpaid_share STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE best_payment STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO window_totals
SELECT r.w, count(*) AS riders, sum(r.rides) AS rides, max(p.paid) AS top_paid
FROM (SELECT date_bin(INTERVAL '4 seconds', event_time) AS w, rider_id, count(*) AS rides
      FROM rides GROUP BY 1, 2) AS r
JOIN (SELECT date_bin(INTERVAL '4 seconds', event_time) AS w, user_id, max(amount) AS paid
      FROM payments GROUP BY 1, 2) AS p
  ON r.w = p.w AND r.rider_id = p.user_id
GROUP BY r.w;

INSERT INTO rolled
SELECT date_bin(INTERVAL '12 seconds', r.w) AS w12, count(*) AS pairs, min(p.n) AS fewest
FROM (SELECT request_id, rider_id, date_bin(INTERVAL '3 seconds', event_time) AS w FROM rides) AS r
JOIN (SELECT date_bin(INTERVAL '3 seconds', event_time) AS w, user_id, count(*) AS n
      FROM payments GROUP BY 1, 2) AS p
  ON r.w = p.w AND r.rider_id = p.user_id
GROUP BY 1;

INSERT INTO by_ride_time
SELECT date_bin(INTERVAL '5 seconds', r.event_time) AS w, count(*) AS pairs,
       count(DISTINCT r.request_id) AS rides, max(p.amount) AS hi, min(p.amount) AS lo
FROM rides r JOIN payments p
  ON r.rider_id = p.user_id
 AND p.event_time BETWEEN r.event_time - INTERVAL '1 second' AND r.event_time + INTERVAL '3 seconds'
GROUP BY 1;

INSERT INTO by_payment_time
SELECT date_bin(INTERVAL '4 seconds', p.event_time) AS w, p.channel, count(*) AS pairs
FROM rides r JOIN payments p
  ON r.rider_id = p.user_id
 AND p.event_time BETWEEN r.event_time - INTERVAL '2 seconds' AND r.event_time + INTERVAL '2 seconds'
GROUP BY 1, 2;

INSERT INTO unpaid_share
SELECT date_bin(INTERVAL '6 seconds', r.event_time) AS w, count(*) AS rows,
       count(p.payment_id) AS paid, count(DISTINCT r.request_id) AS rides
FROM rides r LEFT JOIN payments p
  ON r.rider_id = p.user_id
 AND p.event_time BETWEEN r.event_time AND r.event_time + INTERVAL '2 seconds'
GROUP BY 1;

-- Nexmark q4's shape: each ride's best payment within its time, then per window.
INSERT INTO best_payment
SELECT w, count(*) AS rides, max(best) AS best, min(best) AS worst
FROM (SELECT r.request_id, date_bin(INTERVAL '5 seconds', r.event_time) AS w,
             max(p.amount) AS best
      FROM rides r JOIN payments p
        ON r.rider_id = p.user_id
       AND p.event_time BETWEEN r.event_time AND r.event_time + INTERVAL '4 seconds'
      GROUP BY 1, 2) AS per_ride
GROUP BY w;
"#
    )
}

const AGGREGATED_JOINS: [&str; 6] = [
    "window_totals",
    "rolled",
    "by_ride_time",
    "by_payment_time",
    "unpaid_share",
    "best_payment",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_over_joins_equal_batch_over_sizes_orders_and_workers() {
    let run = Sweep {
        seeds: 3,
        small: 150,
        rows: 600,
        random_seed: 11,
        sinks: Some(AGGREGATED_JOINS.len()),
    };
    sweep(run, aggregated_join_sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_over_joins_restore_and_match_batch() {
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    crate::recovery::failed_runs_restore_and_match_batch(
        &aggregated_join_sql(29, 3000),
        "rides",
        &AGGREGATED_JOINS,
        &schedules,
    )
    .await;
}

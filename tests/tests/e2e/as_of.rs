//! Point-in-time (as-of) joins and Top-N per left row over joins of two streams: each ride
//! with the rider's latest payment at or before it (INNER and LEFT, with an offset, the two
//! latest within an interval, the latest per rider upserted), and each ride's largest payment
//! in the seconds after it (Nexmark q9's shape). Payments carry NULL users, times and amounts,
//! NaN and ±inf, duplicate times and disorder. Streaming equals batch at every micro-batch
//! size, order and worker count, across failures and restores, and the as-of join's state
//! stays flat while its input grows.

use crate::harness::{Sweep, sweep};
use crate::recovery::failed_runs_restore_and_match_batch;

const SINKS: [&str; 6] = [
    "latest_paid",
    "latest_or_none",
    "paid_before",
    "two_latest",
    "largest_after",
    "rider_latest",
];

fn sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '30', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE latest_paid STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE latest_or_none STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE paid_before STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE two_latest STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE largest_after STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE rider_latest STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'rider_id');

-- As of each ride: the rider's latest payment at or before it (ties on the time broken by
-- the payment's other columns).
INSERT INTO latest_paid
SELECT request_id, rider_id, ride_time, payment_id, amount FROM (
  SELECT r.request_id, r.rider_id, r.event_time AS ride_time, p.payment_id, p.amount,
         ROW_NUMBER() OVER (PARTITION BY r.request_id, r.event_time ORDER BY p.event_time DESC) AS rn
  FROM rides r JOIN payments p ON r.rider_id = p.user_id AND p.event_time <= r.event_time) AS t
WHERE rn = 1;

-- LEFT: a ride before any payment of its rider keeps NULLs.
INSERT INTO latest_or_none
SELECT request_id, ride_time, payment_id, paid_at FROM (
  SELECT r.request_id, r.event_time AS ride_time, p.payment_id, p.event_time AS paid_at,
         ROW_NUMBER() OVER (PARTITION BY r.request_id, r.event_time ORDER BY p.event_time DESC, p.payment_id) AS rn
  FROM rides r LEFT JOIN payments p ON r.rider_id = p.user_id AND p.event_time <= r.event_time) AS t
WHERE rn <= 1;

-- At least a second before the ride, with a condition on the ride's own time besides.
INSERT INTO paid_before
SELECT * FROM (
  SELECT r.request_id, r.event_time, p.payment_id, p.merchant,
         ROW_NUMBER() OVER (PARTITION BY r.event_time, r.request_id ORDER BY p.event_time DESC) AS rn
  FROM rides r JOIN payments p
    ON p.user_id = r.rider_id AND p.event_time < r.event_time - INTERVAL '1 second'
   AND p.event_time > r.event_time - INTERVAL '1 minute') AS t
WHERE rn = 1;

-- The two latest within 20 seconds before the ride: an interval join ranked per ride.
INSERT INTO two_latest
SELECT request_id, payment_id, amount, rn FROM (
  SELECT r.request_id, p.payment_id, p.amount,
         ROW_NUMBER() OVER (PARTITION BY r.request_id, r.event_time ORDER BY p.event_time DESC) AS rn
  FROM rides r JOIN payments p
    ON r.rider_id = p.user_id AND p.event_time BETWEEN r.event_time - INTERVAL '20 seconds' AND r.event_time) AS t
WHERE rn <= 2;

-- Nexmark q9's shape: each ride's largest payment in the 10 seconds after it (NULL amounts
-- first, as DESC puts them; NaN above every number).
INSERT INTO largest_after
SELECT request_id, ride_time, payment_id, amount FROM (
  SELECT r.request_id, r.event_time AS ride_time, p.payment_id, p.amount,
         ROW_NUMBER() OVER (PARTITION BY r.request_id, r.event_time ORDER BY p.amount DESC, p.event_time) AS rn
  FROM rides r JOIN payments p
    ON r.rider_id = p.user_id AND p.event_time BETWEEN r.event_time AND r.event_time + INTERVAL '10 seconds') AS t
WHERE rn = 1;

-- Per rider (not per ride): the latest payment at or before any of its rides, upserted.
INSERT INTO rider_latest
SELECT rider_id, payment_id, paid_at FROM (
  SELECT r.rider_id, p.payment_id, p.event_time AS paid_at,
         ROW_NUMBER() OVER (PARTITION BY r.rider_id ORDER BY p.event_time DESC, p.payment_id) AS rn
  FROM rides r JOIN payments p ON r.rider_id = p.user_id AND p.event_time <= r.event_time) AS t
WHERE rn = 1;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_joins_equal_batch_over_sizes_orders_and_workers() {
    let run = Sweep {
        seeds: 3,
        small: 150,
        rows: 700,
        random_seed: 11,
        sinks: Some(SINKS.len()),
    };
    sweep(run, sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_joins_restore_and_match_batch() {
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    failed_runs_restore_and_match_batch(&sql(21, 3000), "rides", &SINKS, &schedules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_join_state_stays_flat_while_input_grows() {
    // 20,000 rides over 400 seconds of event time, 50 riders, each joined as of its time
    // with the rider's latest ride (one source joined with itself, so both sides advance
    // together): a join that held every right row would hold 20,000 by the end.
    let text = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '20000', 'rate' '50', 'seed' '3', 'disorder' '2 seconds', 'riders' '50',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE joined STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO joined
SELECT request_id, previous FROM (
  SELECT r.request_id, p.request_id AS previous,
         ROW_NUMBER() OVER (PARTITION BY r.request_id, r.event_time ORDER BY p.event_time DESC) AS rn
  FROM rides r LEFT JOIN rides p ON r.rider_id = p.rider_id AND p.event_time <= r.event_time) AS t
WHERE rn = 1;
"#;
    let summary = crate::harness::assert_state_flat(text, 1_000).await;
    assert_eq!(summary.late_rows, 0, "{summary:?}");
    assert_eq!(
        summary.rows_out["joined"], 20_000,
        "one row per ride: {summary:?}"
    );
}

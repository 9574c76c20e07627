//! Session windows written as any engine runs them: a gap flag from LAG, a running SUM of it
//! as the session id, then GROUP BY key and session id. Payments (NULL users and amounts,
//! NaN and ±inf, hot keys, duplicate times, disorder) and rides. Streaming equals batch at
//! every micro-batch size, order and worker count, across failures and restores, and the
//! state holds the open sessions only.

use crate::harness::{Sweep, sweep};
use crate::recovery::failed_runs_restore_and_match_batch;

const SINKS: [&str; 4] = ["spend_sessions", "ride_sessions", "numbered", "per_channel"];

fn sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'disorder' '2 seconds', 'riders' '30',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '30', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE spend_sessions STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE ride_sessions STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE numbered STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE per_channel STORED AS BLACKHOLE LOCATION 'x';

-- Each user's spending sessions, 5 seconds without a payment ending one (NULL users are one
-- key; NaN and infinite amounts summed as batch sums them).
INSERT INTO spend_sessions
SELECT user_id, count(*) AS payments, sum(amount) AS spent, min(event_time) AS started,
       max(event_time) AS ended
FROM (SELECT user_id, amount, event_time,
             SUM(new_session) OVER (PARTITION BY user_id ORDER BY event_time) AS session_id
      FROM (SELECT user_id, amount, event_time,
                   CASE WHEN event_time - LAG(event_time) OVER (PARTITION BY user_id ORDER BY event_time)
                             <= INTERVAL '5 seconds' THEN 0 ELSE 1 END AS new_session
            FROM payments) AS flagged) AS sessions
GROUP BY user_id, session_id;

-- The other way round: a flag that is 1 on a gap of more than 3 seconds or on a rider's
-- first ride, in a CTE.
INSERT INTO ride_sessions
WITH flagged AS (
  SELECT rider_id, request_id, event_time,
         CASE WHEN LAG(event_time) OVER (PARTITION BY rider_id ORDER BY event_time) IS NULL
                OR event_time - LAG(event_time) OVER (PARTITION BY rider_id ORDER BY event_time) > INTERVAL '3 seconds'
              THEN 1 ELSE 0 END AS new_session
  FROM rides),
sessions AS (
  SELECT rider_id, request_id, event_time,
         SUM(new_session) OVER (PARTITION BY rider_id ORDER BY event_time) AS session_id
  FROM flagged)
SELECT rider_id, session_id, count(*) AS rides, max(request_id) AS last_request,
       max(event_time) - min(event_time) AS span
FROM sessions GROUP BY rider_id, session_id;

-- The session id itself in the output, and a gap written with `<`.
INSERT INTO numbered
SELECT user_id, session_id, count(*) AS n FROM (
  SELECT user_id,
         SUM(CASE WHEN event_time - prev < INTERVAL '2 seconds' THEN 0 ELSE 1 END)
           OVER (PARTITION BY user_id ORDER BY event_time) AS session_id
  FROM (SELECT user_id, event_time,
               LAG(event_time) OVER (PARTITION BY user_id ORDER BY event_time) AS prev
        FROM payments) AS p) AS s
GROUP BY user_id, session_id;

-- Sessions per user and channel (NULL channels too).
INSERT INTO per_channel
SELECT user_id, channel, count(*) AS n, max(fee) AS top_fee FROM (
  SELECT user_id, channel, fee,
         SUM(f) OVER (PARTITION BY user_id, channel ORDER BY event_time) AS sid
  FROM (SELECT user_id, channel, fee, event_time,
               CASE WHEN event_time - LAG(event_time) OVER (PARTITION BY user_id, channel ORDER BY event_time)
                         <= INTERVAL '4 seconds' THEN 0 ELSE 1 END AS f
        FROM payments) AS p) AS s
GROUP BY user_id, channel, sid;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_equal_batch_over_sizes_orders_and_workers() {
    let run = Sweep {
        seeds: 3,
        small: 150,
        rows: 700,
        random_seed: 5,
        sinks: Some(SINKS.len()),
    };
    sweep(run, sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_restore_and_match_batch() {
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    failed_runs_restore_and_match_batch(&sql(9, 3000), "payments", &SINKS, &schedules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_stays_flat_while_input_grows() {
    // 20,000 rides over 400 seconds of event time, 50 riders, sessions ending after 2
    // seconds without a ride: many sessions per rider, a few open at a time.
    let text = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '20000', 'rate' '50', 'seed' '3', 'disorder' '2 seconds', 'riders' '50',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE sessions STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO sessions
SELECT rider_id, count(*) AS rides FROM (
  SELECT rider_id,
         SUM(CASE WHEN event_time - prev <= INTERVAL '2 seconds' THEN 0 ELSE 1 END)
           OVER (PARTITION BY rider_id ORDER BY event_time) AS sid
  FROM (SELECT rider_id, event_time,
               LAG(event_time) OVER (PARTITION BY rider_id ORDER BY event_time) AS prev
        FROM rides) AS r) AS s
GROUP BY rider_id, sid;
"#;
    let summary = crate::harness::assert_state_flat(text, 2_000).await;
    assert_eq!(summary.late_rows, 0, "{summary:?}");
    assert!(
        summary.rows_out["sessions"] > 500,
        "many sessions per rider: {summary:?}"
    );
}

//! OVER windows, LAG/LEAD and ranking: a corpus of queries over dirty payments (NULL users,
//! NaN and ±inf amounts, hot users, duplicate event times) whose streamed rows equal batch's,
//! over micro-batch sizes, input orders, workers, and jobs that fail and restore.

use crate::harness::{Sweep, sweep};
use crate::recovery::failed_runs_restore_and_match_batch;

/// The corpus' sinks, one per INSERT.
pub(crate) const SINKS: [&str; 16] = [
    "rolling",
    "last_rows",
    "shifted",
    "ranked",
    "running",
    "navigated",
    "global",
    "spread",
    "lists",
    "two_windows",
    "named",
    "rolled_up",
    "over_windows",
    "computed",
    "two_levels",
    "merchants",
];

/// The corpus over `count` payments of generator seed `seed`.
pub(crate) fn corpus(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
{sinks}

-- Sliding RANGE frames: count, sum and avg over NaN, ±inf and NULL amounts.
INSERT INTO rolling
SELECT payment_id, user_id, event_time,
       count(*) OVER w AS n, count(amount) OVER w AS priced,
       sum(amount) OVER w AS total, avg(amount) OVER w AS mean
FROM payments
WINDOW w AS (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '3 seconds' PRECEDING AND CURRENT ROW);

-- Sliding ROWS frames, min and max in a total order (NaN above +inf).
INSERT INTO last_rows
SELECT payment_id, user_id,
       avg(amount) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS avg5,
       min(amount) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS lo5,
       max(fee) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 2 PRECEDING AND 1 PRECEDING) AS hi_before
FROM payments;

-- LAG and LEAD, with offsets and defaults.
INSERT INTO shifted
SELECT payment_id, user_id,
       event_time - LAG(event_time) OVER (PARTITION BY user_id ORDER BY event_time) AS since_previous,
       LAG(amount, 2, 0.0) OVER (PARTITION BY user_id ORDER BY event_time) AS amount_2_back,
       LEAD(merchant) OVER (PARTITION BY user_id ORDER BY event_time) AS next_merchant,
       LEAD(amount, 3, -1.0) OVER (PARTITION BY user_id ORDER BY event_time) AS amount_3_on
FROM payments;

-- Ranking over duplicate event times.
INSERT INTO ranked
SELECT payment_id, merchant,
       ROW_NUMBER() OVER (PARTITION BY merchant ORDER BY event_time) AS rn,
       RANK() OVER (PARTITION BY merchant ORDER BY event_time) AS rk,
       DENSE_RANK() OVER (PARTITION BY merchant ORDER BY event_time) AS drk
FROM payments;

-- Frames from UNBOUNDED PRECEDING: the default frame and explicit ones.
INSERT INTO running
SELECT payment_id, user_id,
       count(*) OVER (PARTITION BY user_id ORDER BY event_time) AS n_so_far,
       sum(fee) OVER (PARTITION BY user_id ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS fees_so_far,
       max(amount) OVER (PARTITION BY user_id ORDER BY event_time) AS top_so_far,
       bool_or(approved) OVER (PARTITION BY user_id ORDER BY event_time) AS any_ok
FROM payments;

-- FIRST_VALUE, LAST_VALUE and NTH_VALUE over bounded and unbounded frames.
INSERT INTO navigated
SELECT payment_id, user_id,
       FIRST_VALUE(amount) OVER (PARTITION BY user_id ORDER BY event_time) AS first_amount,
       LAST_VALUE(merchant) OVER (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND CURRENT ROW) AS last_merchant,
       NTH_VALUE(amount, 2) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS second_of_4,
       NTH_VALUE(merchant, 3) OVER (PARTITION BY user_id ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS third_merchant,
       FIRST_VALUE(channel) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS channel_before
FROM payments;

-- No PARTITION BY: one partition.
INSERT INTO global
SELECT payment_id,
       count(*) OVER (ORDER BY event_time RANGE BETWEEN INTERVAL '1 second' PRECEDING AND CURRENT ROW) AS per_second,
       ROW_NUMBER() OVER (ORDER BY event_time) AS seq
FROM payments;

-- Spread statistics over a sliding frame.
INSERT INTO spread
SELECT payment_id, channel,
       stddev(fee) OVER w AS sd, var_pop(fee) OVER w AS vp, median(fee) OVER w AS med
FROM payments
WINDOW w AS (PARTITION BY channel ORDER BY event_time RANGE BETWEEN INTERVAL '5 seconds' PRECEDING AND CURRENT ROW);

-- Lists of values: order within a frame follows the tie order.
INSERT INTO lists
SELECT payment_id,
       array_agg(merchant) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS recent,
       string_agg(merchant, '|') OVER (PARTITION BY user_id ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS all_merchants
FROM payments WHERE user_id % 4 = 1;

-- Windows with different partitions in one SELECT.
INSERT INTO two_windows
SELECT payment_id,
       count(*) OVER (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '4 seconds' PRECEDING AND CURRENT ROW) AS per_user,
       count(*) OVER (PARTITION BY merchant ORDER BY event_time RANGE BETWEEN INTERVAL '4 seconds' PRECEDING AND CURRENT ROW) AS per_merchant,
       sum(amount) OVER (PARTITION BY channel ORDER BY event_time ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS per_channel
FROM payments;

-- Named windows.
INSERT INTO named
SELECT payment_id, sum(amount) OVER pairs AS pair, ROW_NUMBER() OVER w AS rn
FROM payments
WINDOW w AS (PARTITION BY user_id ORDER BY event_time),
       pairs AS (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 1 PRECEDING AND CURRENT ROW);

-- An aggregate over OVER values, windowed by the event time.
INSERT INTO rolled_up
SELECT user_id, date_bin(INTERVAL '5 seconds', event_time) AS w, max(n3) AS busiest, count(*) AS n
FROM (SELECT user_id, event_time,
             count(*) OVER (PARTITION BY user_id ORDER BY event_time RANGE BETWEEN INTERVAL '3 seconds' PRECEDING AND CURRENT ROW) AS n3
      FROM payments) AS t
GROUP BY 1, 2;

-- An OVER over a windowed aggregate's rows.
INSERT INTO over_windows
SELECT w, channel, n,
       sum(n) OVER (PARTITION BY channel ORDER BY w ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS last_3,
       LAG(n) OVER (PARTITION BY channel ORDER BY w) AS before
FROM (SELECT date_bin(INTERVAL '2 seconds', event_time) AS w, channel, count(*) AS n
      FROM payments GROUP BY 1, 2) AS t;

-- Computed arguments and keys, over filtered rows.
INSERT INTO computed
SELECT payment_id,
       avg(CASE WHEN approved THEN amount END) OVER (PARTITION BY user_id % 3 ORDER BY event_time RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND CURRENT ROW) AS approved_mean,
       count(*) OVER (PARTITION BY user_id % 3, channel ORDER BY event_time ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS n6
FROM payments WHERE merchant <> '';

-- Two levels of OVER.
INSERT INTO two_levels
SELECT payment_id, n3, n3 - LAG(n3, 1, 0) OVER (PARTITION BY user_id ORDER BY event_time) AS growth
FROM (SELECT payment_id, user_id, event_time,
             count(*) OVER (PARTITION BY user_id ORDER BY event_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n3
      FROM payments) AS t;

-- Many small partitions, some of one row.
INSERT INTO merchants
SELECT payment_id, merchant, user_id,
       count(*) OVER (PARTITION BY merchant, user_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 second' PRECEDING AND CURRENT ROW) AS n,
       LAG(payment_id) OVER (PARTITION BY merchant, user_id ORDER BY event_time) AS previous
FROM payments;
"#,
        sinks = SINKS
            .iter()
            .map(|s| format!("CREATE EXTERNAL TABLE {s} STORED AS BLACKHOLE LOCATION 'x';"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_windows_stream_equal_to_batch_over_sizes_orders_and_workers() {
    sweep(
        Sweep {
            seeds: 4,
            small: 60,
            rows: 400,
            random_seed: 31,
            sinks: Some(SINKS.len()),
        },
        corpus,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_windows_restore_mid_run_and_equal_batch() {
    // (rows after which each run fails, checkpoint interval in epochs, workers per run)
    let schedules = [
        (vec![150, 420], 1, vec![1, 2, 3]),
        (vec![90, 300, 610], 2, vec![4, 1, 2, 3]),
    ];
    failed_runs_restore_and_match_batch(&corpus(7, 800), "payments", &SINKS, &schedules).await;
}

/// No rows at all (a file with only its header): `volley batch` and `volley run` both succeed
/// and every OVER sink is empty.
#[test]
fn over_windows_over_no_rows_emit_nothing() {
    use crate::process::volley_ok;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.csv"), "user_id,ts,amount\n").unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE pay (user_id BIGINT, ts TIMESTAMP NOT NULL, amount DOUBLE)
           STORED AS CSV LOCATION 'none.csv' OPTIONS ('watermark' 'ts - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE a STORED AS PARQUET LOCATION 'out/a';
         CREATE EXTERNAL TABLE b STORED AS PARQUET LOCATION 'out/b';
         INSERT INTO a SELECT user_id, sum(amount) OVER (PARTITION BY user_id ORDER BY ts
             RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS s,
             LAG(amount) OVER (PARTITION BY user_id ORDER BY ts) AS prev FROM pay;
         INSERT INTO b SELECT ROW_NUMBER() OVER (ORDER BY ts) AS rn,
             LEAD(amount, 2) OVER (PARTITION BY user_id ORDER BY ts) AS next2 FROM pay;",
    )
    .unwrap();
    for args in [
        vec!["batch", "p.sql"],
        vec!["run", "p.sql", "--quiet", "--no-flight", "--no-checkpoint"],
    ] {
        let out = volley_ok(dir.path(), &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("a: 0 rows written") && text.contains("b: 0 rows written"),
            "{args:?}: {text}"
        );
    }
}

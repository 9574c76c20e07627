//! Window functions per window (Top-N by ROW_NUMBER, RANK and DENSE_RANK, NTILE, PERCENT_RANK
//! over each window of a windowed aggregate), Top-N without a window (upserted ranks),
//! and deduplication (the first row per key, and per key and window, by event time; the latest
//! row per key, upserted): streamed rows equal batch's over micro-batch sizes, input orders,
//! workers, and jobs that fail and restore.

use crate::harness::{Sweep, sweep};
use crate::recovery::failed_runs_restore_and_match_batch;

/// The corpus' sinks, one per INSERT.
const SINKS: [&str; 9] = [
    "top_users",
    "top_merchants",
    "hop_top",
    "spread",
    "top_share",
    "first_payment",
    "first_per_window",
    "top_fees",
    "latest",
];

/// The corpus over `count` payments of generator seed `seed`.
fn corpus(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
{sinks}

-- Top 3 users by spend per 5-second window (ties on the total ordered by the other columns).
INSERT INTO top_users
SELECT w, user_id, total, rn FROM (
  SELECT w, user_id, total, ROW_NUMBER() OVER (PARTITION BY w ORDER BY total DESC) AS rn
  FROM (SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, user_id, sum(amount) AS total
        FROM payments GROUP BY 1, 2) AS t
) AS ranked WHERE rn <= 3;

-- RANK and DENSE_RANK per window and channel, with < and =.
INSERT INTO top_merchants
SELECT * FROM (
  SELECT w, channel, merchant, n,
         RANK() OVER (PARTITION BY w, channel ORDER BY n DESC) AS r,
         DENSE_RANK() OVER (PARTITION BY channel, w ORDER BY n DESC, merchant) AS d
  FROM (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, channel, merchant, count(*) AS n
        FROM payments GROUP BY 1, 2, 3) AS t
) AS ranked WHERE r < 3 OR d = 1;

-- Top 2 per hop window.
INSERT INTO hop_top
SELECT starttime, user_id, n FROM (
  SELECT starttime, user_id, n, ROW_NUMBER() OVER (PARTITION BY starttime ORDER BY n DESC, user_id) AS rn
  FROM (SELECT starttime, user_id, count(*) AS n
        FROM (SELECT user_id, unnest(hop(event_time, INTERVAL '2 seconds', INTERVAL '6 seconds')) AS starttime
              FROM payments) AS h
        GROUP BY 1, 2) AS t
) AS ranked WHERE rn <= 2;

-- Functions that need the whole partition: a window's partition is whole.
INSERT INTO spread
SELECT w, user_id, total,
       NTILE(4) OVER (PARTITION BY w ORDER BY total) AS quartile,
       PERCENT_RANK() OVER (PARTITION BY w ORDER BY total) AS pr,
       CUME_DIST() OVER (PARTITION BY w ORDER BY total) AS cd
FROM (SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, user_id, max(fee) AS total
      FROM payments GROUP BY 1, 2) AS t;

-- Per window and user, then the top user of each window with its share.
INSERT INTO top_share
SELECT w, user_id, share FROM (
  SELECT w, user_id, n * 1.0 / sum(n) OVER (PARTITION BY w) AS share,
         ROW_NUMBER() OVER (PARTITION BY w ORDER BY n DESC) AS rn
  FROM (SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, user_id, count(*) AS n
        FROM payments GROUP BY 1, 2) AS t
) AS ranked WHERE rn = 1;

-- Deduplication: the first payment of each user (ties on the time broken by the other columns).
INSERT INTO first_payment
SELECT payment_id, user_id, event_time, amount FROM (
  SELECT payment_id, user_id, event_time, amount,
         ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY event_time) AS rn
  FROM payments) AS t WHERE rn = 1;

-- ... and per 3-second window (the keys of a window are forgotten once it closes).
INSERT INTO first_per_window
SELECT payment_id, user_id, w, merchant FROM (
  SELECT payment_id, user_id, merchant, date_bin(INTERVAL '3 seconds', event_time) AS w,
         ROW_NUMBER() OVER (PARTITION BY user_id, date_bin(INTERVAL '3 seconds', event_time) ORDER BY event_time) AS rn
  FROM payments) AS t WHERE rn = 1;

-- Top-N without a window: the three highest fees per user (NULL users one partition, NULL
-- fees first), upserted by (user_id, rn).
INSERT INTO top_fees
SELECT user_id, payment_id, fee, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY fee DESC) AS rn FROM payments) AS t
WHERE rn <= 3;

-- The latest payment per user and channel, upserted by (user_id, channel).
INSERT INTO latest
SELECT user_id, channel, payment_id, amount FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, channel ORDER BY event_time DESC) AS rn FROM payments) AS t
WHERE rn = 1;
"#,
        sinks = SINKS
            .iter()
            .map(|s| {
                let key = match *s {
                    "top_fees" => " OPTIONS ('merge_key' 'user_id, rn')",
                    "latest" => " OPTIONS ('merge_key' 'user_id, channel')",
                    _ => "",
                };
                format!("CREATE EXTERNAL TABLE {s} STORED AS BLACKHOLE LOCATION 'x'{key};")
            })
            .collect::<Vec<_>>()
            .join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_and_dedup_stream_equal_to_batch_over_sizes_orders_and_workers() {
    sweep(
        Sweep {
            seeds: 3,
            small: 60,
            rows: 400,
            random_seed: 17,
            sinks: Some(SINKS.len()),
        },
        corpus,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_and_dedup_restore_mid_run_and_equal_batch() {
    // (rows after which each run fails, checkpoint interval in epochs, workers per run)
    let schedules = [(vec![150, 420], 1, vec![1, 2, 3])];
    failed_runs_restore_and_match_batch(&corpus(5, 700), "payments", &SINKS, &schedules).await;
}

/// A Top-N and a keep-last deduplication without a window, into Delta tables merged on their
/// keys: after every epoch's commit, each table (read by Python `deltalake`) equals DuckDB's
/// ranking of the rows read by that epoch (the pipeline's own `raw` table at the same epoch).
#[test]
fn updating_top_n_in_delta_equals_duckdb_after_every_commit() {
    use crate::process::volley_ok;
    use crate::readers::python;
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    std::fs::write(
        here.join("p.sql"),
        "CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
         OPTIONS ('count' '3000', 'rate' '200', 'seed' '3', 'disorder' '2 seconds', 'riders' '40',
                  'watermark' 'event_time - INTERVAL ''3 seconds''', 'max_rows' '250');
         CREATE EXTERNAL TABLE raw STORED AS DELTA LOCATION 'out/raw';
         CREATE EXTERNAL TABLE top_fees STORED AS DELTA LOCATION 'out/top_fees'
         OPTIONS ('merge_key' 'user_id, rn');
         CREATE EXTERNAL TABLE latest STORED AS DELTA LOCATION 'out/latest'
         OPTIONS ('merge_key' 'user_id');
         INSERT INTO raw SELECT * FROM payments;
         INSERT INTO top_fees SELECT user_id, payment_id, fee, rn FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY fee DESC) AS rn FROM payments) AS t
         WHERE rn <= 3;
         INSERT INTO latest SELECT user_id, payment_id, amount FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY event_time DESC) AS rn FROM payments) AS t
         WHERE rn = 1;",
    )
    .unwrap();
    volley_ok(here, &["run", "p.sql", "--quiet", "--no-flight"]);
    let Some(python) = python() else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/top_n_delta.py");
    let out = std::process::Command::new(python)
        .args([script, &here.join("out").display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: std::collections::HashMap<String, usize> =
        serde_json::from_str(text.trim()).unwrap();
    for table in ["top_fees", "latest"] {
        assert!(
            checked[table] >= 10,
            "{table}: only {} commits checked ({text})",
            checked[table]
        );
    }
}

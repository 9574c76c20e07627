//! The OVER window over small tables: rows are emitted once the watermark passes them, with
//! the values batch gives them.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

#[tokio::test]
async fn a_rolling_sum_and_lag_are_emitted_once_the_watermark_passes_the_row() {
    let sql = "SELECT user_id, ts, amount,
        sum(amount) OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '10 seconds' PRECEDING AND CURRENT ROW) AS s10,
        LAG(amount) OVER (PARTITION BY user_id ORDER BY ts) AS prev
        FROM s";
    for workers in [1, 2] {
        let mut kit = Kit::new(COLUMNS, "ts", sql, workers).await.unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 1
                 2026-01-01T00:00:05 | a       | 2
                 2026-01-01T00:00:05 | b       | 7",
                Some("2026-01-01T00:00:05"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | ts | amount | s10 | prev\n\
             a | 2026-01-01T00:00:01 | 1.0 | 1.0 | NULL\n",
            "rows at 00:00:05 wait for their peers (workers {workers})"
        );
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:05 | a       | 4
                 2026-01-01T00:00:14 | a       | 8",
                Some("2026-01-01T00:00:20"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | ts | amount | s10 | prev\n\
             a | 2026-01-01T00:00:05 | 2.0 | 7.0 | 1.0\n\
             a | 2026-01-01T00:00:05 | 4.0 | 7.0 | 2.0\n\
             a | 2026-01-01T00:00:14 | 8.0 | 14.0 | 4.0\n\
             b | 2026-01-01T00:00:05 | 7.0 | 7.0 | NULL\n",
            "peers share the RANGE frame; ties ordered by amount (workers {workers})"
        );
        assert_eq!(kit.finish().await.unwrap(), "", "workers {workers}");
    }
}

/// Rows of `users` users, one per user every second from `second` for `seconds` seconds.
fn steady(schema: &arrow::datatypes::SchemaRef, users: i64, second: i64, seconds: i64) -> arrow::record_batch::RecordBatch {
    use arrow::array::{Float64Array, StringViewArray, TimestampNanosecondArray};
    let mut ts = Vec::new();
    let mut user = Vec::new();
    let mut amount = Vec::new();
    for s in second..second + seconds {
        for u in 0..users {
            ts.push(s * 1_000_000_000 + u);
            user.push(format!("u{u}"));
            amount.push((s * 7 + u) as f64 / 3.0);
        }
    }
    arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::clone(schema),
        vec![
            std::sync::Arc::new(TimestampNanosecondArray::from(ts)),
            std::sync::Arc::new(StringViewArray::from(user)),
            std::sync::Arc::new(Float64Array::from(amount)),
        ],
    )
    .unwrap()
}

/// Over 20 times more events than a frame holds, the rows held per partition stay flat once
/// the frames are full: what a 10-second RANGE frame, a 5-row frame and LAG can still read,
/// and nothing for running totals and ranks (their carry is not rows); the checkpoint holds
/// exactly those rows.
#[tokio::test]
async fn held_rows_stay_flat_after_warm_up() {
    let users = 50;
    for (sql, per_partition) in [
        (
            "SELECT user_id, sum(amount) OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '10 seconds' PRECEDING AND CURRENT ROW) AS s FROM s",
            11,
        ),
        (
            "SELECT user_id, avg(amount) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS a,
                    LAG(amount, 3) OVER (PARTITION BY user_id ORDER BY ts) AS back3 FROM s",
            5,
        ),
        (
            "SELECT user_id, count(*) OVER (PARTITION BY user_id ORDER BY ts) AS n,
                    RANK() OVER (PARTITION BY user_id ORDER BY ts) AS r FROM s",
            0,
        ),
    ] {
        let mut kit = Kit::new(COLUMNS, "ts", sql, 2).await.unwrap();
        let schema = kit.schema();
        let mut held = Vec::new();
        let mut emitted = 0;
        for epoch in 0..200 {
            let rows = steady(&schema, users, epoch, 1);
            emitted += kit
                .epoch_batch(rows, (epoch + 1) * 1_000_000_000)
                .await
                .unwrap();
            held.push(kit.runner().state_rows());
        }
        assert_eq!(emitted, 200 * users as usize, "{sql}");
        let bound = (per_partition + 1) * users as usize;
        let after_warm_up = &held[20..];
        assert!(
            after_warm_up.iter().all(|h| *h <= bound),
            "{sql}: held rows {after_warm_up:?} above {bound}"
        );
        assert_eq!(
            after_warm_up.iter().min(),
            after_warm_up.iter().max(),
            "{sql}: held rows flat"
        );
        let snapshot = kit
            .runner()
            .operators()
            .next()
            .unwrap()
            .snapshot()
            .unwrap();
        let rows: usize = snapshot
            .pieces
            .iter()
            .filter(|p| p.name == "rows" || p.name == "pending")
            .flat_map(|p| &p.rows)
            .map(arrow::record_batch::RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, *held.last().unwrap(), "{sql}: the checkpoint holds them");
    }
}

/// `users` users' rows for second `second`: times with ties and disorder within the second,
/// NULL and NaN amounts, a hot user with most rows.
fn second_of(users: usize, second: usize) -> String {
    let mut table = String::from("ts | user_id | amount\n");
    for i in 0..users * 3 {
        let user = if i % 3 == 0 { 0 } else { (i * 7 + second) % users };
        let millis = (i * 337 + second * 91) % 1000 / 100 * 100;
        let amount = match (i + second) % 11 {
            0 => "NULL".to_string(),
            1 => "NaN".to_string(),
            k => format!("{}", k as f64 * 1.25 - 4.0),
        };
        table.push_str(&format!(
            "2026-01-01T00:00:{:02}.{millis:03} | u{user} | {amount}\n",
            second
        ));
    }
    table
}

/// A job restarted from a checkpoint (partitions gathered on several threads, through an Arrow
/// IPC file) emits exactly what it would have emitted without the restart: sliding, running
/// and ranking state, held rows, first rows and rows waiting for LEAD all come back.
#[tokio::test]
async fn a_restart_from_a_checkpoint_changes_no_row() {
    let sql = "SELECT user_id, ts, amount,
        sum(amount) OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '2 seconds' PRECEDING AND CURRENT ROW) AS s2,
        count(*) OVER (PARTITION BY user_id ORDER BY ts) AS n,
        max(amount) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS m3,
        string_agg(CAST(amount AS VARCHAR), ',') OVER (PARTITION BY user_id ORDER BY ts) AS all_amounts,
        RANK() OVER (PARTITION BY user_id ORDER BY ts) AS r,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts) AS rn,
        FIRST_VALUE(amount) OVER (PARTITION BY user_id ORDER BY ts) AS first_amount,
        LAG(amount, 2) OVER (PARTITION BY user_id ORDER BY ts) AS back2,
        LEAD(amount) OVER (PARTITION BY user_id ORDER BY ts) AS next
        FROM s";
    let (users, seconds) = (12, 10);
    let mut runs = Vec::new();
    for restart_at in [None, Some(1), Some(4), Some(8)] {
        let mut kit = Kit::new(COLUMNS, "ts - INTERVAL '1 second'", sql, 2)
            .await
            .unwrap();
        let mut out = Vec::new();
        for second in 0..seconds {
            if restart_at == Some(second) {
                kit.restart().await.unwrap();
            }
            let watermark = format!("2026-01-01T00:00:{:02}", second.max(1) - 1);
            out.push(
                kit.epoch(&second_of(users, second), Some(&watermark))
                    .await
                    .unwrap(),
            );
        }
        out.push(kit.finish().await.unwrap());
        runs.push((restart_at, out));
    }
    let (_, expected) = &runs[0];
    let rows: usize = expected.iter().map(|e| e.lines().count().saturating_sub(1)).sum();
    assert_eq!(rows, users * 3 * seconds, "every row emitted once");
    for (restart_at, out) in &runs[1..] {
        assert_eq!(out, expected, "restarted before second {restart_at:?}");
    }
}

/// The first row of each user in each 5-second window (deduplication within a window): one
/// row per user and window is emitted, and a window's partitions are forgotten once the
/// watermark passes its end, so the partitions held stay flat over 40 windows (2,000 without
/// forgetting).
#[tokio::test]
async fn partitions_of_a_bucket_of_the_event_time_are_forgotten_when_it_closes() {
    let users = 50;
    let sql = "SELECT user_id, ts, amount FROM (
        SELECT user_id, ts, amount,
               ROW_NUMBER() OVER (PARTITION BY date_bin(INTERVAL '5 seconds', ts), user_id ORDER BY ts) AS rn
        FROM s) AS t WHERE rn = 1";
    let mut kit = Kit::new(COLUMNS, "ts", sql, 2).await.unwrap();
    let schema = kit.schema();
    let (mut emitted, mut held) = (0, Vec::new());
    for epoch in 0..200 {
        let rows = steady(&schema, users, epoch, 1);
        emitted += kit
            .epoch_batch(rows, (epoch + 1) * 1_000_000_000)
            .await
            .unwrap();
        held.push(kit.runner().open_windows());
    }
    assert_eq!(emitted, 40 * users as usize, "one row per user and window");
    let most = held[20..].iter().max().copied().unwrap_or_default();
    assert!(
        most <= 3 * users as usize,
        "at most three windows' partitions held (sweeps are paid for by rows), not every window's: {held:?}"
    );
}

//! The windowed join over small tables: a window is joined once, when both sides are
//! complete for it, with the join type's batch meaning; a row of a joined window is late.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

/// Clicks (amount NULL) and payments (amount set) of the same user in the same 10-second
/// window, both sides read from the one source.
const JOIN: &str = "SELECT a.w, a.user_id, a.clicks, b.paid
    FROM (SELECT date_bin(INTERVAL '10 seconds', ts) AS w, user_id, count(*) AS clicks
          FROM s WHERE amount IS NULL GROUP BY 1, 2) a
    LEFT JOIN (SELECT date_bin(INTERVAL '10 seconds', ts) AS w, user_id, sum(amount) AS paid
          FROM s WHERE amount IS NOT NULL GROUP BY 1, 2) b
    ON a.w = b.w AND a.user_id = b.user_id";

#[tokio::test]
async fn a_window_is_joined_once_both_sides_are_complete_for_it() {
    for workers in [1, 2] {
        let mut kit = Kit::new(COLUMNS, "ts", JOIN, workers).await.unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | NULL
                 2026-01-01T00:00:02 | a       | NULL
                 2026-01-01T00:00:03 | a       | 2.5
                 2026-01-01T00:00:04 | b       | NULL
                 2026-01-01T00:00:12 | a       | NULL",
                Some("2026-01-01T00:00:09"),
            )
            .await
            .unwrap();
        assert_eq!(out, "", "nothing is complete before 00:00:10 (workers {workers})");
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:13 | a       | 1",
                Some("2026-01-01T00:00:10"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "w | user_id | clicks | paid\n\
             2026-01-01T00:00:00 | a | 2 | 2.5\n\
             2026-01-01T00:00:00 | b | 1 | NULL\n",
            "the first window, LEFT: b paid nothing (workers {workers})"
        );
        let out = kit.finish().await.unwrap();
        assert_eq!(
            out,
            "w | user_id | clicks | paid\n2026-01-01T00:00:10 | a | 1 | 1.0\n",
            "workers {workers}"
        );
    }
}

/// Each click beside the payments of its window, joined on the bucket of the rows themselves.
const BUCKETS: &str = "SELECT a.user_id, a.ts AS clicked, b.amount
    FROM s a JOIN s b
      ON date_bin(INTERVAL '10 seconds', a.ts) = date_bin(INTERVAL '10 seconds', b.ts)
     AND a.user_id = b.user_id
    WHERE a.amount IS NULL AND b.amount IS NOT NULL";

#[tokio::test]
async fn rows_bucketed_into_a_joined_window_are_late() {
    let mut kit = Kit::new(COLUMNS, "ts", BUCKETS, 1).await.unwrap();
    let out = kit
        .epoch(
            "ts                  | user_id | amount
             2026-01-01T00:00:01 | a       | NULL
             2026-01-01T00:00:05 | a       | 3
             2026-01-01T00:00:11 | a       | 4",
            Some("2026-01-01T00:00:10"),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        "user_id | clicked | amount\na | 2026-01-01T00:00:01 | 3.0\n"
    );
    let out = kit
        .epoch(
            "ts                  | user_id | amount
             2026-01-01T00:00:09 | a       | 7",
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, "", "the window [00:00:00, 00:00:10) was joined: late");
    let out = kit.finish().await.unwrap();
    assert_eq!(out, "", "no click in the second window");
}

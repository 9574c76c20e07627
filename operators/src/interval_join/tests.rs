//! The interval join over small tables: new rows of each side meet the other side's held and
//! new rows; a LEFT join's row that can no longer match is emitted alone, once.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

/// Each click and the payments of the same user within 5 seconds after it.
const PAID_AFTER: &str = "SELECT a.user_id, a.ts AS clicked, b.ts AS paid, b.amount
    FROM (SELECT * FROM s WHERE amount IS NULL) a
    LEFT JOIN (SELECT * FROM s WHERE amount IS NOT NULL) b
      ON a.user_id = b.user_id AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '5 seconds'";

#[tokio::test]
async fn rows_meet_across_epochs_and_an_unmatched_left_row_is_emitted_when_it_is_done() {
    for workers in [1, 2] {
        let mut kit = Kit::new(COLUMNS, "ts", PAID_AFTER, workers).await.unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | NULL
                 2026-01-01T00:00:02 | b       | NULL",
                Some("2026-01-01T00:00:02"),
            )
            .await
            .unwrap();
        assert_eq!(out, "", "a partner may still come (workers {workers})");
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:04 | a       | 9
                 2026-01-01T00:00:07 | a       | 1",
                Some("2026-01-01T00:00:08"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | clicked | paid | amount\n\
             a | 2026-01-01T00:00:01 | 2026-01-01T00:00:04 | 9.0\n\
             b | 2026-01-01T00:00:02 | NULL | NULL\n",
            "00:00:07 is too late for a's click; b's click can no longer match (workers {workers})"
        );
        assert_eq!(kit.finish().await.unwrap(), "", "workers {workers}");
    }
}

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

//! Window functions per window over small tables: a window's Top-N is emitted once, when the
//! window below closes.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

#[tokio::test]
async fn the_top_two_users_of_each_window_are_emitted_when_it_closes() {
    let sql = "SELECT w, user_id, total, rn, r FROM (
          SELECT w, user_id, total,
                 ROW_NUMBER() OVER (PARTITION BY w ORDER BY total DESC) AS rn,
                 RANK() OVER (PARTITION BY w ORDER BY total DESC) AS r
          FROM (SELECT date_bin(INTERVAL '10 seconds', ts) AS w, user_id, sum(amount) AS total
                FROM s GROUP BY 1, 2)
        ) WHERE rn <= 2";
    for workers in [1, 2] {
        let mut kit = Kit::new(COLUMNS, "ts", sql, workers).await.unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 5
                 2026-01-01T00:00:02 | b       | 7
                 2026-01-01T00:00:03 | c       | 3
                 2026-01-01T00:00:04 | a       | 4
                 2026-01-01T00:00:12 | d       | 1",
                Some("2026-01-01T00:00:05"),
            )
            .await
            .unwrap();
        assert_eq!(out, "", "no window closed yet (workers {workers})");
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:09 | c       | 6
                 2026-01-01T00:00:15 | e       | 1",
                Some("2026-01-01T00:00:10"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "w | user_id | total | rn | r\n\
             2026-01-01T00:00:00 | a | 9.0 | 1 | 1\n\
             2026-01-01T00:00:00 | c | 9.0 | 2 | 1\n",
            "a and c tie at 9 (ties ordered by user_id); b's 7 is third (workers {workers})"
        );
        assert_eq!(
            kit.finish().await.unwrap(),
            "w | user_id | total | rn | r\n\
             2026-01-01T00:00:10 | d | 1.0 | 1 | 1\n\
             2026-01-01T00:00:10 | e | 1.0 | 2 | 1\n",
            "workers {workers}"
        );
        assert_eq!(kit.runner().state_rows(), 0, "nothing held");
    }
}

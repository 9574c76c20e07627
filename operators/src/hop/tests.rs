//! The hop-window aggregate over small tables: which windows each row counts in, when each
//! window is emitted, and that a row of emitted windows is late.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

/// Windows 10 seconds wide, every 5 seconds, per user.
const HOP: &str = "SELECT w, user_id, count(*) AS n, sum(amount) AS total
    FROM (SELECT unnest(hop(ts, INTERVAL '5 seconds', INTERVAL '10 seconds')) AS w, user_id, amount FROM s) t
    GROUP BY w, user_id";

#[tokio::test]
async fn each_row_counts_in_every_window_holding_it_emitted_once_when_it_ends() {
    for workers in [1, 2] {
        let mut kit = Kit::new(COLUMNS, "ts", HOP, workers).await.unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:06 | a       | 2
                 2026-01-01T00:00:01 | a       | 1
                 2026-01-01T00:00:12 | b       | NULL
                 2026-01-01T00:00:05 | NULL    | 0.5",
                Some("2026-01-01T00:00:09"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "w | user_id | n | total\n2025-12-31T23:59:55 | a | 1 | 1.0\n",
            "only the window ending at 00:00:05 has ended (workers {workers})"
        );
        let out = kit
            .epoch("ts\n", Some("2026-01-01T00:00:15"))
            .await
            .unwrap();
        assert_eq!(
            out,
            "w | user_id | n | total\n\
             2026-01-01T00:00:00 | NULL | 1 | 0.5\n\
             2026-01-01T00:00:00 | a | 2 | 3.0\n\
             2026-01-01T00:00:05 | NULL | 1 | 0.5\n\
             2026-01-01T00:00:05 | a | 1 | 2.0\n\
             2026-01-01T00:00:05 | b | 1 | NULL\n",
            "the windows ending at 00:00:10 and 00:00:15, each once (workers {workers})"
        );
        let out = kit.finish().await.unwrap();
        assert_eq!(
            out, "w | user_id | n | total\n2026-01-01T00:00:10 | b | 1 | NULL\n",
            "workers {workers}"
        );
    }
}

#[tokio::test]
async fn a_row_whose_windows_were_emitted_is_late_and_changes_nothing() {
    let mut kit = Kit::new(COLUMNS, "ts", HOP, 1).await.unwrap();
    let out = kit
        .epoch(
            "ts | user_id\n2026-01-01T00:00:02 | a",
            Some("2026-01-01T00:00:10"),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        "w | user_id | n | total\n\
         2025-12-31T23:59:55 | a | 1 | NULL\n\
         2026-01-01T00:00:00 | a | 1 | NULL\n"
    );
    let out = kit
        .epoch("ts | user_id\n2026-01-01T00:00:03 | a", None)
        .await
        .unwrap();
    assert_eq!(out, "", "both windows holding 00:00:03 were emitted");
    assert_eq!(kit.finish().await.unwrap(), "");
}

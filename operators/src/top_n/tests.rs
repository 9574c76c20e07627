//! The Top-N without a window over small tables: each micro-batch upserts the ranks of the
//! partitions it touched; a partition holds at most N rows.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

const TOP_TWO: &str = "SELECT user_id, ts, amount, rn FROM (
    SELECT user_id, ts, amount, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY amount DESC) AS rn
    FROM s) AS t WHERE rn <= 2";

#[tokio::test]
async fn each_micro_batch_upserts_the_ranks_it_changed() {
    for (workers, restart) in [(1, false), (2, false), (2, true)] {
        let mut kit = Kit::new(COLUMNS, "ts", TOP_TWO, workers).await.unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 5
                 2026-01-01T00:00:02 | a       | 7
                 2026-01-01T00:00:03 | b       | 1
                 2026-01-01T00:00:04 | NULL    | 3
                 2026-01-01T00:00:05 | NULL    | NULL",
                Some("2026-01-01T00:00:01"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | ts | amount | rn\n\
             NULL | 2026-01-01T00:00:04 | 3.0 | 2\n\
             NULL | 2026-01-01T00:00:05 | NULL | 1\n\
             a | 2026-01-01T00:00:01 | 5.0 | 2\n\
             a | 2026-01-01T00:00:02 | 7.0 | 1\n\
             b | 2026-01-01T00:00:03 | 1.0 | 1\n",
            "NULL users are one partition; a NULL amount ranks first, as DESC puts NULLs (workers {workers})"
        );
        if restart {
            kit.restart().await.unwrap();
        }
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:00 | a       | 7
                 2026-01-01T00:00:06 | a       | 6
                 2026-01-01T00:00:07 | b       | 0.5",
                Some("2026-01-01T00:00:02"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | ts | amount | rn\n\
             a | 2026-01-01T00:00:00 | 7.0 | 1\n\
             a | 2026-01-01T00:00:02 | 7.0 | 2\n\
             b | 2026-01-01T00:00:03 | 1.0 | 1\n\
             b | 2026-01-01T00:00:07 | 0.5 | 2\n",
            "the tie at 7 is broken by the earlier time; 6 and 5 fall out (workers {workers}, restart {restart})"
        );
        assert_eq!(kit.runner().state_rows(), 6, "two rows for a, b and NULL");
        assert_eq!(kit.finish().await.unwrap(), "", "nothing waits for the end");
    }
}

const BEST_PER_SECOND: &str = "SELECT user_id, ts, amount, rn FROM (
    SELECT user_id, ts, amount, ROW_NUMBER() OVER (PARTITION BY user_id, ts ORDER BY amount DESC) AS rn
    FROM s) AS t WHERE rn <= 2";

#[tokio::test]
async fn a_partition_by_event_time_is_appended_once_the_watermark_passes_it() {
    for (workers, restart) in [(1, false), (2, false), (2, true)] {
        let mut kit = Kit::new(COLUMNS, "ts", BEST_PER_SECOND, workers)
            .await
            .unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 5
                 2026-01-01T00:00:01 | a       | 7
                 2026-01-01T00:00:01 | a       | 6
                 2026-01-01T00:00:02 | a       | 1
                 2026-01-01T00:00:01 | NULL    | 3",
                Some("2026-01-01T00:00:01"),
            )
            .await
            .unwrap();
        assert_eq!(out, "", "nothing is final before the watermark passes 00:00:01");
        if restart {
            kit.restart().await.unwrap();
        }
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 9
                 2026-01-01T00:00:02 | a       | 4",
                Some("2026-01-01T00:00:02"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | ts | amount | rn\n\
             NULL | 2026-01-01T00:00:01 | 3.0 | 1\n\
             a | 2026-01-01T00:00:01 | 7.0 | 2\n\
             a | 2026-01-01T00:00:01 | 9.0 | 1\n",
            "second 1 is final: its two best rows, once (workers {workers}, restart {restart})"
        );
        assert_eq!(
            kit.runner().state_rows(),
            2,
            "only second 2's rows are held (workers {workers}, restart {restart})"
        );
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 100",
                Some("2026-01-01T00:00:03"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | ts | amount | rn\n\
             a | 2026-01-01T00:00:02 | 1.0 | 2\n\
             a | 2026-01-01T00:00:02 | 4.0 | 1\n",
            "a late row of second 1 changes nothing emitted (workers {workers}, restart {restart})"
        );
        assert_eq!(kit.runner().state_rows(), 0, "every partition closed");
        assert_eq!(kit.finish().await.unwrap(), "");
    }
}

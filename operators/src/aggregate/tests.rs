//! The windowed and keyed aggregates over small tables: a window is emitted once, when the
//! watermark passes its end; a row of an emitted window is late; a keyed aggregate upserts the
//! groups each epoch touched.

#![allow(clippy::unwrap_used)]

use crate::kit::Kit;

const COLUMNS: &str = "ts TIMESTAMP NOT NULL, user_id VARCHAR, amount DOUBLE";

#[tokio::test]
async fn a_tumbling_window_emits_once_the_watermark_passes_its_end() {
    for workers in [1, 2] {
        let mut kit = Kit::new(
            COLUMNS,
            "ts - INTERVAL '1 second'",
            "SELECT date_bin(INTERVAL '10 seconds', ts) AS w, user_id, count(*) AS n, sum(amount) AS total
             FROM s GROUP BY 1, 2",
            workers,
        )
        .await
        .unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | 1.5
                 2026-01-01T00:00:09 | a       | NULL
                 2026-01-01T00:00:10 | b       | -0.0
                 2026-01-01T00:00:03 | NULL    | 2",
                Some("2026-01-01T00:00:09"),
            )
            .await
            .unwrap();
        assert_eq!(
            out, "",
            "nothing is final before the watermark passes 00:00:10"
        );
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:12 | b       | 4",
                Some("2026-01-01T00:00:11"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "w | user_id | n | total\n\
             2026-01-01T00:00:00 | NULL | 1 | 2.0\n\
             2026-01-01T00:00:00 | a | 2 | 1.5\n",
            "workers {workers}"
        );
        let out = kit.finish().await.unwrap();
        assert_eq!(
            out, "w | user_id | n | total\n2026-01-01T00:00:10 | b | 2 | 4.0\n",
            "workers {workers}"
        );
    }
}

#[tokio::test]
async fn a_row_of_an_emitted_window_is_late_and_not_counted() {
    let mut kit = Kit::new(
        COLUMNS,
        "ts",
        "SELECT date_bin(INTERVAL '10 seconds', ts) AS w, count(*) AS n FROM s GROUP BY 1",
        1,
    )
    .await
    .unwrap();
    kit.epoch(
        "ts | user_id\n2026-01-01T00:00:05 | a\n2026-01-01T00:00:15 | a",
        Some("2026-01-01T00:00:15"),
    )
    .await
    .unwrap();
    let out = kit
        .epoch("ts\n2026-01-01T00:00:06", Some("2026-01-01T00:00:16"))
        .await
        .unwrap();
    assert_eq!(out, "", "the late row changes nothing");
    let out = kit.finish().await.unwrap();
    assert_eq!(out, "w | n\n2026-01-01T00:00:10 | 1\n");
}

#[tokio::test]
async fn a_keyed_aggregate_upserts_the_groups_each_epoch_touched() {
    for workers in [1, 2] {
        let mut kit = Kit::new(
            COLUMNS,
            "ts",
            "SELECT user_id, count(*) AS n, max(amount) AS top FROM s GROUP BY user_id",
            workers,
        )
        .await
        .unwrap();
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | a       | NaN
                 2026-01-01T00:00:02 | b       | -inf
                 2026-01-01T00:00:03 | NULL    | 1",
                Some("2026-01-01T00:00:03"),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            "user_id | n | top
NULL | 1 | 1.0
a | 1 | NaN
b | 1 | -inf
",
            "workers {workers}"
        );
        let out = kit
            .epoch(
                "ts                  | user_id | amount
                 2026-01-01T00:00:01 | b       | 7",
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            out, "user_id | n | top
b | 2 | 7.0
",
            "only b changed, late or not: a keyed aggregate has no window (workers {workers})"
        );
        assert_eq!(kit.finish().await.unwrap(), "", "workers {workers}");
    }
}

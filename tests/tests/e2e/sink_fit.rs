//! An updating result (GROUP BY without a window) is refused at plan time by any sink that
//! would append its updates, and a `merge_key` must name output columns.

/// The planning error for `sink` (its declaration) receiving `query`, or `None` if accepted.
async fn refusal(sink: &str, query: &str) -> Option<String> {
    let sql = format!(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL, amount DOUBLE)
         STORED AS CSV LOCATION 'data/clicks.csv' OPTIONS ('watermark' 'ts - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE out {sink};
         INSERT INTO out {query};"
    );
    crate::harness::refusal(&sql).await
}

const KEYED: &str = "SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id";
const WINDOWED: &str = "SELECT user_id, date_bin(INTERVAL '1 minute', ts) AS w, count(*) AS n FROM clicks GROUP BY 1, 2";

#[tokio::test]
async fn a_keyed_aggregate_needs_a_sink_that_upserts_by_its_groups() {
    // No merge_key: every update would be one more row.
    for sink in [
        "STORED AS PARQUET LOCATION 'out/x'",
        "STORED AS DELTA LOCATION 'out/x'",
        "STORED AS BLACKHOLE LOCATION 'x'",
    ] {
        let err = refusal(sink, KEYED).await.expect("refused");
        assert!(
            err.contains("INSERT INTO out")
                && err.contains("updates its rows every micro-batch")
                && err.contains("has no 'merge_key'")
                && err.contains("OPTIONS ('merge_key' 'user_id')")
                && err.contains("window"),
            "{sink}: {err}"
        );
    }
    // Files only append, merge_key or not.
    let err = refusal(
        "STORED AS PARQUET LOCATION 'out/x' OPTIONS ('merge_key' 'user_id')",
        KEYED,
    )
    .await
    .expect("refused");
    assert!(
        err.contains("STORED AS PARQUET, which only appends") && err.contains("DELTA"),
        "{err}"
    );
    // Keyed by something other than the groups.
    let err = refusal(
        "STORED AS DELTA LOCATION 'out/x' OPTIONS ('merge_key' 'n')",
        KEYED,
    )
    .await
    .expect("refused");
    assert!(
        err.contains("merges by 'n'") && err.contains("'merge_key' 'user_id'"),
        "{err}"
    );
    // What works: an upserting sink keyed by the groups, or a window into any sink.
    assert_eq!(
        refusal(
            "STORED AS DELTA LOCATION 'out/x' OPTIONS ('merge_key' 'user_id')",
            KEYED
        )
        .await,
        None
    );
    assert_eq!(
        refusal("STORED AS PARQUET LOCATION 'out/x'", WINDOWED).await,
        None
    );
}

#[tokio::test]
async fn a_merge_key_must_name_output_columns() {
    let err = refusal(
        "STORED AS PARQUET LOCATION 'out/x' OPTIONS ('merge_key' 'user_id, window_start')",
        WINDOWED,
    )
    .await
    .expect("refused");
    assert!(
        err.contains("'merge_key'")
            && err.contains("names 'window_start', which the query does not output")
            && err.contains("user_id, w, n"),
        "{err}"
    );
}

//! Enrichment (lookup) joins: payments, as real data holds them, joined with dimension tables
//! that have no watermark (CSV and Parquet files on disk, with NULL keys, duplicate keys, keys
//! the stream never has, NaN, ±0 and ±inf). Streaming equals batch at every micro-batch size,
//! order and worker count, and across failures and restores.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use std::collections::BTreeMap;

use volley_connectors::{ConnectorRegistry, Sink};
use volley_engine::driver::BatchSizing;
use volley_engine::memory::CollectSink;
use volley_engine::setup::{JobOverrides, build_stream_job};

use crate::harness::{Sweep, pipeline, refusal, sweep};

/// The sinks of [`sql`], in order.
pub const SINKS: [&str; 9] = [
    "per_segment",
    "enriched",
    "described",
    "risky",
    "strangers",
    "user_windows",
    "by_category",
    "limits",
    "channel_names",
];

/// Writes the dimension tables into `dir`: `users.csv`, `merchants.parquet`, `channels.csv`.
pub fn write_dimensions(dir: &Path) {
    // Users 1..=25 and 40 (the stream has users 1..=30 and NULL): user 2 twice, a NULL key,
    // and limits that are NaN, ±inf, -0.0 and missing.
    let mut users = String::from("user_id,segment,credit_limit\n");
    for id in 1..=25 {
        let segment = ["retail", "pro", ""][id % 3];
        let limit = match id % 6 {
            0 => "NaN".to_string(),
            1 => String::new(),
            2 => "inf".to_string(),
            3 => "-0.0".to_string(),
            4 => "-inf".to_string(),
            _ => format!("{}.5", id * 100),
        };
        users.push_str(&format!("{id},{segment},{limit}\n"));
    }
    users.push_str("2,duplicate,7.25\n,orphan,1.0\n40,absent,2.0\n");
    std::fs::write(dir.join("users.csv"), users).unwrap();

    let mut channels = String::from("channel,channel_name\n");
    for c in 0..12 {
        channels.push_str(&format!("{c},ch{c}\n"));
    }
    channels.push_str("3,three-again\n");
    std::fs::write(dir.join("channels.csv"), channels).unwrap();

    let schema = Arc::new(Schema::new(vec![
        Field::new("merchant", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("risk", DataType::Float64, true),
        Field::new("tier", DataType::Int32, true),
    ]));
    let merchants = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                Some("Acme Grocery"),
                Some("Metro Transit"),
                Some("Café Zürich"),
                Some("東京ラーメン"),
                Some("Nobody Sells Here"),
                None,
                Some("Acme Grocery"),
            ])),
            Arc::new(StringArray::from(vec![
                Some("food"),
                Some("travel"),
                None,
                Some("food"),
                Some("none"),
                Some("null-key"),
                Some("food-dup"),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(0.1),
                Some(0.9),
                Some(f64::NAN),
                Some(-0.0),
                Some(0.7),
                Some(0.8),
                None,
            ])),
            Arc::new(Int32Array::from(vec![
                Some(1),
                Some(2),
                None,
                Some(1),
                Some(3),
                Some(3),
                Some(2),
            ])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("merchants.parquet")).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&merchants).unwrap();
    writer.close().unwrap();
}

/// Payments enriched by three lookup tables in every way a feature query does it.
pub fn sql(dir: &Path, seed: u64, count: u64) -> String {
    let dir = dir.display();
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE users (user_id BIGINT, segment VARCHAR, credit_limit DOUBLE)
  STORED AS CSV LOCATION '{dir}/users.csv' OPTIONS ('has_header' 'true');
CREATE EXTERNAL TABLE merchants STORED AS PARQUET LOCATION '{dir}/merchants.parquet';
CREATE EXTERNAL TABLE channels (channel INT, channel_name VARCHAR)
  STORED AS CSV LOCATION '{dir}/channels.csv' OPTIONS ('has_header' 'true');

CREATE EXTERNAL TABLE per_segment STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE enriched STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE described STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE risky STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE strangers STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE user_windows STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE by_category STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'category');
CREATE EXTERNAL TABLE limits STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE channel_names STORED AS BLACKHOLE LOCATION 'x';

-- Enrich, then window by a dimension column.
INSERT INTO per_segment
SELECT date_bin(INTERVAL '5 seconds', p.event_time) AS w, u.segment, count(*) AS n,
       sum(p.amount) AS amount, max(u.credit_limit) AS top_limit, count(u.user_id) AS known
FROM payments p LEFT JOIN users u ON p.user_id = u.user_id
GROUP BY 1, 2;

-- Inner enrichment (a duplicate key matches twice, a NULL key never).
INSERT INTO enriched
SELECT p.payment_id, p.user_id, u.segment, u.credit_limit, p.amount, p.event_time
FROM payments p JOIN users u ON p.user_id = u.user_id;

-- Two lookups, one with an extra condition on the table.
INSERT INTO described
SELECT p.payment_id, m.category, m.risk, c.channel_name
FROM payments p
LEFT JOIN merchants m ON p.merchant = m.merchant AND m.tier < 3
LEFT JOIN channels c ON p.channel = c.channel;

-- Semi-join.
INSERT INTO risky
SELECT payment_id, merchant, amount FROM payments
WHERE merchant IN (SELECT merchant FROM merchants WHERE risk > 0.5);

-- Anti-join.
INSERT INTO strangers
SELECT payment_id, user_id FROM payments p
WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = p.user_id);

-- Window first, then enrich what the window emits.
INSERT INTO user_windows
SELECT a.w, a.user_id, a.n, u.segment
FROM (SELECT date_bin(INTERVAL '2 seconds', event_time) AS w, user_id, count(*) AS n
      FROM payments GROUP BY 1, 2) AS a
LEFT JOIN users u ON a.user_id = u.user_id;

-- A keyed aggregate by a dimension column (upserts).
INSERT INTO by_category
SELECT m.category, count(*) AS n, sum(p.amount) AS amount
FROM payments p JOIN merchants m ON p.merchant = m.merchant
GROUP BY m.category;

-- The table aggregated before the join (one row per key).
INSERT INTO limits
SELECT p.payment_id, l.top_limit, l.rows_per_user
FROM payments p
JOIN (SELECT user_id, max(credit_limit) AS top_limit, count(*) AS rows_per_user
      FROM users GROUP BY user_id) AS l
  ON p.user_id = l.user_id;

-- A key computed on the stream's side.
INSERT INTO channel_names
SELECT date_bin(INTERVAL '4 seconds', p.event_time) AS w, c.channel_name, count(*) AS n
FROM payments p JOIN channels c ON c.channel = p.channel % 5
GROUP BY 1, 2;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_joins_equal_batch_over_sizes_orders_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    write_dimensions(dir.path());
    let run = Sweep {
        seeds: 4,
        small: 150,
        rows: 800,
        random_seed: 11,
        sinks: Some(SINKS.len()),
    };
    sweep(run, |seed, count| sql(dir.path(), seed, count)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_join_hashes_its_lookup_table_once_for_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    write_dimensions(dir.path());
    let p = pipeline(&sql(dir.path(), 2, 900)).await;
    let overrides = JobOverrides {
        sinks: SINKS
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    Box::new(CollectSink::new().0) as Box<dyn Sink>,
                )
            })
            .collect(),
        sizing: Some(BatchSizing::Fixed(7)),
        workers: Some(2),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let tables = job.lookups().data();
    let summary = job.run().await.unwrap();
    assert!(summary.epochs > 100, "{} epochs", summary.epochs);
    let scans: BTreeMap<String, usize> = tables
        .iter()
        .map(|t| (t.name().to_string(), t.scans()))
        .collect();
    // users: per_segment, enriched, strangers, user_windows, limits; merchants: described,
    // risky, by_category; channels: described, channel_names.
    let expected = BTreeMap::from([
        ("channels".to_string(), 2),
        ("merchants".to_string(), 3),
        ("users".to_string(), 5),
    ]);
    assert_eq!(scans, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_joins_restore_and_match_batch() {
    let dir = tempfile::tempdir().unwrap();
    write_dimensions(dir.path());
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    crate::recovery::failed_runs_restore_and_match_batch(
        &sql(dir.path(), 5, 3000),
        "payments",
        &SINKS,
        &schedules,
    )
    .await;
}

#[tokio::test]
async fn lookup_joins_that_cannot_stream_are_refused_with_the_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    write_dimensions(dir.path());
    let head = sql(dir.path(), 1, 10);
    let head = &head[..head.find("CREATE EXTERNAL TABLE per_segment").unwrap()];
    for (query, expected) in [
        (
            "SELECT u.segment, p.payment_id FROM payments p RIGHT JOIN users u ON p.user_id = u.user_id",
            "(stream LEFT JOIN users)",
        ),
        (
            "SELECT u.segment FROM users u WHERE u.user_id IN (SELECT user_id FROM payments)",
            "WHERE key IN (SELECT key FROM users)",
        ),
        (
            "SELECT payment_id FROM payments WHERE user_id NOT IN (SELECT user_id FROM users)",
            "NOT EXISTS",
        ),
        (
            "SELECT p.payment_id FROM payments p JOIN users u ON p.amount > u.credit_limit",
            "equality key",
        ),
        (
            "SELECT user_id FROM payments UNION ALL SELECT user_id FROM users",
            "declare a watermark on it",
        ),
    ] {
        let text = format!(
            "{head}CREATE EXTERNAL TABLE o STORED AS BLACKHOLE LOCATION 'x';\nINSERT INTO o {query};"
        );
        let why = refusal(&text)
            .await
            .unwrap_or_else(|| panic!("not refused: {query}"));
        assert!(why.contains(expected), "{query}: {why}");
    }
    // A table with no watermark read as a stream by one INSERT and joined by another.
    let text = format!(
        "{head}CREATE EXTERNAL TABLE a STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE b STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO a SELECT p.payment_id, u.segment FROM payments p JOIN users u ON p.user_id = u.user_id;
INSERT INTO b SELECT segment FROM users;"
    );
    let why = refusal(&text)
        .await
        .expect("a table read both ways is refused");
    assert!(
        why.contains("'users'") && why.contains("lookup table") && why.contains("as a stream"),
        "{why}"
    );
}

//! Hop (sliding) windows, written `unnest(hop(ts, slide, size))` in a subquery: streaming (one
//! pane per row, windows merged from panes) equals batch (every row copied into each of its
//! windows) at every micro-batch size, order and worker count, across failures and restores,
//! with state bounded by the open windows' panes.

use crate::harness::{Sweep, refusal, sweep};

/// The sinks of [`sql`], in order.
const SINKS: [&str; 6] = [
    "sliding",
    "gapped",
    "per_merchant",
    "enriched_hop",
    "top_merchants",
    "rolled_up",
];

/// Hops over payments (NULL times, users and amounts; NaN, ±0, ±inf; duplicate times and rows
/// on window edges): a size that is not a multiple of the slide (panes of 2 s), a slide longer
/// than the size (rows between windows are in none), keyed with HAVING, and over a lookup join.
fn sql(dir: &std::path::Path, seed: u64, count: u64) -> String {
    let dir = dir.display();
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '40', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE users (user_id BIGINT, segment VARCHAR, credit_limit DOUBLE)
  STORED AS CSV LOCATION '{dir}/users.csv' OPTIONS ('has_header' 'true');
CREATE EXTERNAL TABLE sliding STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE gapped STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE per_merchant STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE enriched_hop STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE top_merchants STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE rolled_up STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO sliding
SELECT w, count(*) AS n, count(user_id) AS known, sum(amount) AS amount, min(amount) AS lo,
       max(amount) AS hi, count(DISTINCT user_id) AS users
FROM (SELECT unnest(hop(event_time, INTERVAL '4 seconds', INTERVAL '10 seconds')) AS w,
             user_id, amount FROM payments) AS t
GROUP BY w;

INSERT INTO gapped
SELECT w, count(*) AS n, max(amount) AS hi
FROM (SELECT unnest(hop(event_time, INTERVAL '6 seconds', INTERVAL '2 seconds')) AS w, amount
      FROM payments) AS t
GROUP BY w;

INSERT INTO per_merchant
SELECT merchant, w, count(*) AS n, avg(amount) AS mean
FROM (SELECT merchant, amount,
             unnest(hop(event_time, INTERVAL '5 seconds', INTERVAL '15 seconds')) AS w
      FROM payments WHERE channel % 3 <> 1) AS t
GROUP BY merchant, w
HAVING count(*) > 1;

INSERT INTO enriched_hop
SELECT w, segment, count(*) AS n
FROM (SELECT unnest(hop(p.event_time, INTERVAL '3 seconds', INTERVAL '9 seconds')) AS w, u.segment
      FROM payments p LEFT JOIN users u ON p.user_id = u.user_id) AS t
GROUP BY w, segment;

-- Nexmark q5's shape: the merchants with the most payments in each hop window (ties
-- included), the hop counts joined on their window with the per-window maximum.
INSERT INTO top_merchants
SELECT c.w, c.merchant, c.n
FROM (SELECT w, merchant, count(*) AS n
      FROM (SELECT merchant, unnest(hop(event_time, INTERVAL '2 seconds', INTERVAL '6 seconds')) AS w
            FROM payments) AS t
      GROUP BY w, merchant) AS c
JOIN (SELECT w, max(n) AS top
      FROM (SELECT w, merchant, count(*) AS n
            FROM (SELECT merchant, unnest(hop(event_time, INTERVAL '2 seconds', INTERVAL '6 seconds')) AS w
                  FROM payments) AS t
            GROUP BY w, merchant) AS per
      GROUP BY w) AS m
  ON c.w = m.w AND c.n >= m.top;

-- Hop windows' rows windowed again by their start: 10-second buckets of 4-second hops.
INSERT INTO rolled_up
SELECT date_bin(INTERVAL '10 seconds', w) AS ten, sum(n) AS n, max(hi) AS hi, count(*) AS windows
FROM (SELECT w, count(*) AS n, max(amount) AS hi
      FROM (SELECT unnest(hop(event_time, INTERVAL '4 seconds', INTERVAL '8 seconds')) AS w, amount
            FROM payments) AS t
      GROUP BY w) AS h
GROUP BY 1;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_windows_equal_batch_over_sizes_orders_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    crate::lookup::write_dimensions(dir.path());
    let run = Sweep {
        seeds: 4,
        small: 150,
        rows: 800,
        random_seed: 5,
        sinks: Some(SINKS.len()),
    };
    sweep(run, |seed, count| sql(dir.path(), seed, count)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_windows_restore_and_match_batch() {
    let dir = tempfile::tempdir().unwrap();
    crate::lookup::write_dimensions(dir.path());
    let schedules = [
        (vec![700, 1900], 1, vec![1, 2, 3]),
        (vec![450, 1000, 2600], 3, vec![2, 3, 1, 2]),
    ];
    crate::recovery::failed_runs_restore_and_match_batch(
        &sql(dir.path(), 9, 3000),
        "payments",
        &SINKS,
        &schedules,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_window_state_stays_flat_over_many_windows() {
    // 200 s of events, 10-second windows every 2 seconds: 100 windows, five open at a time.
    let text = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '20000', 'rate' '100', 'seed' '3', 'disorder' '2 seconds', 'cities' '6',
         'riders' '50', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE sliding STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO sliding
SELECT w, cell, count(*) AS n, count(DISTINCT rider_id) AS riders
FROM (SELECT unnest(hop(event_time, INTERVAL '2 seconds', INTERVAL '10 seconds')) AS w,
             geohash(lat, lon, 3) AS cell, rider_id FROM rides) AS t
GROUP BY w, cell;
"#;
    // After the first tenth (warm-up), state never exceeds twice what it held then.
    let summary = crate::harness::assert_state_flat(text, u64::MAX).await;
    assert!(summary.windows_emitted >= 100, "{summary:?}");
}

#[tokio::test]
async fn hop_windows_that_cannot_stream_are_refused() {
    let head = r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE plain STORED AS GENERATOR LOCATION 'rides' OPTIONS ('count' '10');
CREATE EXTERNAL TABLE o STORED AS BLACKHOLE LOCATION 'x';
"#;
    for (query, expected) in [
        (
            "SELECT w, count(*) FROM (SELECT unnest(hop(event_time, INTERVAL '1 month', INTERVAL '2 months')) AS w FROM rides) t GROUP BY w",
            "months",
        ),
        (
            "SELECT w, count(*) FROM (SELECT unnest(hop(event_time, INTERVAL '1 second', INTERVAL '5 seconds')) AS w FROM plain) t GROUP BY w",
            "has no watermark",
        ),
    ] {
        let why = refusal(&format!("{head}INSERT INTO o {query};"))
            .await
            .unwrap_or_else(|| panic!("not refused: {query}"));
        assert!(why.contains(expected), "{query}: {why}");
    }
}

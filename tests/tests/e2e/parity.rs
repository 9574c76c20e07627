//! The backbone: for many seeds, micro-batch sizes and input orders, streaming output equals
//! batch output for every sink.

use volley_engine::driver::BatchSizing;
use volley_engine::verify::InputOrder;

use crate::harness::{assert_exact, parity, pipeline, rows};

/// One pipeline covering windowed count / count distinct / sum / min / max / avg / stddev /
/// median, filters, projections, HAVING, geohash, a keyed (upsert) aggregate and a stateless
/// INSERT — several INSERTs over one source.
fn sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'disorder' '2 seconds', 'cities' '6',
         'riders' '50', 'watermark' 'event_time - INTERVAL ''3 seconds''');

CREATE EXTERNAL TABLE by_cell STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE stats STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE busy STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE per_rider STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'rider_id');
CREATE EXTERNAL TABLE raw STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO by_cell
SELECT geohash(lat, lon, 3) AS cell, date_bin(INTERVAL '5 seconds', event_time) AS w,
       count(*) AS n, count(DISTINCT rider_id) AS riders
FROM rides GROUP BY 1, 2;

INSERT INTO stats
SELECT tumble(event_time, INTERVAL '4 seconds') AS w, rider_id % 3 AS bucket,
       sum(rider_id) AS s, min(lat) AS lo, max(lon) AS hi, avg(lat) AS mean,
       stddev(lon) AS sd, median(rider_id) AS med
FROM rides WHERE request_id % 5 <> 0 GROUP BY 1, 2;

INSERT INTO busy
SELECT w, cell, n * 10 AS n10 FROM (
  SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, geohash(lat, lon, 2) AS cell, count(*) AS n
  FROM rides GROUP BY 1, 2 HAVING count(*) > 3) AS t;

INSERT INTO per_rider
SELECT rider_id, count(*) AS n, max(event_time) AS last_seen FROM rides GROUP BY rider_id;

INSERT INTO raw
SELECT request_id, geohash(lat, lon, 5) AS cell, lat * 2 AS lat2 FROM rides WHERE rider_id % 2 = 0;
"#
    )
}

/// Payments as real data holds them: NULLs in every nullable column, NaN of both signs, ±0.0,
/// ±inf amounts, hot users, duplicate event times and rows exactly on window edges.
fn payments_sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');

CREATE EXTERNAL TABLE per_user STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE per_merchant STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'merchant');
CREATE EXTERNAL TABLE per_second STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE refunds STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO per_user
SELECT user_id, date_bin(INTERVAL '2 seconds', event_time) AS w, count(*) AS n, count(amount) AS priced,
       sum(amount) AS total, min(amount) AS lo, max(amount) AS hi, avg(fee) AS mean_fee,
       count(DISTINCT merchant) AS merchants, bool_or(approved) AS any_ok
FROM payments GROUP BY 1, 2;

INSERT INTO per_merchant
SELECT merchant, count(*) AS n, max(amount) AS hi, min(event_time) AS first_seen, sum(fee) AS fees
FROM payments GROUP BY merchant;

INSERT INTO per_second
SELECT date_trunc('second', event_time) AS s, channel, count(*) AS n, median(amount) AS med
FROM payments WHERE approved GROUP BY 1, 2;

INSERT INTO refunds
SELECT payment_id, user_id, amount, amount * 2 AS doubled FROM payments WHERE amount < 0 OR amount IS NULL;
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_equals_batch_over_seeds_sizes_and_orders() {
    for seed in 0..20u64 {
        // Size-1 micro-batches run one epoch per row: keep that input small.
        for (sizing, count) in [
            (BatchSizing::Fixed(1), 120),
            (BatchSizing::Fixed(7), 600),
            (BatchSizing::Fixed(8192), 600),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 300,
                    seed: seed + 11,
                },
                600,
            ),
        ] {
            // Rides (clean, skewed) and payments (dirty) alike; payments every other seed.
            let mut pipelines = vec![(sql(seed, count), 5)];
            if seed % 2 == 0 {
                pipelines.push((payments_sql(seed, count), 4));
            }
            for (text, sinks) in pipelines {
                let p = pipeline(&text).await;
                let input = rows(&p).await;
                for order in [InputOrder::InOrder, InputOrder::Shuffled] {
                    // 1 to 4 workers: the input split across partitions and the state across
                    // shards.
                    let workers = 1 + (seed as usize) % 4;
                    let report = parity(&p, &input, sizing.clone(), order, seed, workers).await;
                    assert_exact(
                        &report,
                        &format!("seed {seed}, {sizing:?}, {order:?}, {workers} workers"),
                    );
                    assert_eq!(report.sinks.len(), sinks);
                    assert!(
                        report.sinks.iter().all(|s| s.total > 0),
                        "every sink got rows: {report:?}"
                    );
                }
            }
        }
    }
}

/// Bounded inputs are read in the source's own order on every run and every machine: a
/// multi-partition read is concatenated partition by partition, never interleaved as the
/// partitions happen to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_inputs_keep_their_own_order() {
    let p = pipeline(&sql(5, 50_000)).await;
    for _ in 0..5 {
        let input = rows(&p).await;
        let (_, batches) = &input["rides"];
        let mut ids = Vec::new();
        for b in batches {
            let col = b
                .column_by_name("request_id")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            ids.extend(col.values().iter().copied());
        }
        assert_eq!(ids.len(), 50_000);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "request ids out of generation order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_disorder_within_watermark_needs_no_reordering() {
    let p = pipeline(&sql(99, 2000)).await;
    let input = rows(&p).await;
    let report = parity(&p, &input, BatchSizing::Fixed(64), InputOrder::AsIs, 1, 3).await;
    assert_exact(&report, "as generated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_row_is_caught() {
    use volley_connectors::ConnectorRegistry;
    use volley_engine::batch::batch_outputs;
    use volley_engine::verify::{VerifyOptions, compare_outputs, stream_outputs};
    let p = pipeline(&sql(3, 400)).await;
    let input = rows(&p).await;
    let mut batch = batch_outputs(&p, &input).await.unwrap();
    let opts = VerifyOptions::default();
    let (stream, plans) = stream_outputs(&p, &ConnectorRegistry::builtin(), &input, &opts)
        .await
        .unwrap();
    // Corrupt one value of one row of the batch side of `by_cell` (the `n` column).
    let rows = batch.get_mut("by_cell").unwrap();
    let first = rows[0].clone();
    let n = first
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    let mut values: Vec<i64> = n.values().to_vec();
    values[0] += 1;
    let mut columns = first.columns().to_vec();
    columns[2] = std::sync::Arc::new(arrow::array::Int64Array::from(values));
    rows[0] = arrow::record_batch::RecordBatch::try_new(first.schema(), columns).unwrap();
    let report = compare_outputs(&p, &plans, &batch, &stream, 5).unwrap();
    let by_cell = report.sinks.iter().find(|s| s.sink == "by_cell").unwrap();
    assert_eq!(
        by_cell.matched + 1,
        by_cell.total,
        "exactly one key differs"
    );
    assert!(!report.is_exact());
    assert!(
        by_cell.differences[0].contains("batch"),
        "{:?}",
        by_cell.differences
    );
}

/// `date_trunc` buckets, the way offline SQL usually writes them, are tumbling windows: each
/// emitted once when the watermark passes its end (so an append-only sink takes them), equal
/// to batch, from seconds to calendar months, over data with NULLs, NaN and edge times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_trunc_buckets_are_windows_equal_to_batch() {
    use volley_operators::aggregate::AggregatePlan;
    use volley_sql::stream::WindowSize;
    // One payment per 100 s from Saturday 31 January, noon: 1,500 rows cross the end of
    // January and Monday 2 February (a week's start).
    for (rate, unit, size) in [
        ("20", "second", WindowSize::Fixed(1_000_000_000)),
        ("20", "minute", WindowSize::Fixed(60_000_000_000)),
        ("0.01", "month", WindowSize::Months(1)),
        ("0.01", "week", WindowSize::Fixed(7 * 86_400_000_000_000)),
    ] {
        let disorder = if rate == "20" { "2 seconds" } else { "1 hour" };
        let sql = format!(
            "CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
             OPTIONS ('count' '1500', 'rate' '{rate}', 'seed' '3', 'riders' '40', 'disorder' '{disorder}',
                      'start_time' '2026-01-31 12:00:00',
                      'watermark' 'event_time - INTERVAL ''{disorder}''');
             CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out/unused';
             INSERT INTO out SELECT user_id, date_trunc('{unit}', event_time) AS bucket,
                    count(*) AS n, sum(amount) AS total, max(amount) AS top
             FROM payments GROUP BY user_id, date_trunc('{unit}', event_time);"
        );
        let p = pipeline(&sql).await;
        let plans = crate::harness::plans(&p).await;
        let nodes = plans[0].nodes();
        let [node] = nodes.as_slice() else {
            panic!("one operator")
        };
        let agg = node
            .as_any()
            .downcast_ref::<AggregatePlan>()
            .expect("an aggregate");
        let window = agg.window.as_ref().expect("date_trunc is a window");
        assert_eq!(window.size, size, "{unit}");
        let input = rows(&p).await;
        for (sizing, order, workers) in [
            (BatchSizing::Fixed(1), InputOrder::Shuffled, 1),
            (BatchSizing::Fixed(7), InputOrder::InOrder, 2),
            (BatchSizing::Fixed(8192), InputOrder::Shuffled, 3),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 200,
                    seed: 5,
                },
                InputOrder::Shuffled,
                2,
            ),
        ] {
            let report = parity(&p, &input, sizing.clone(), order, 9, workers).await;
            assert_exact(
                &report,
                &format!("date_trunc('{unit}') {sizing:?} {order:?}"),
            );
            assert!(report.sinks[0].total > 40, "{unit}: {report:?}");
        }
    }
}

/// GROUPING SETS, ROLLUP and CUBE inside a window, over clean and dirty data (NULL keys next
/// to rolled-up NULLs).
fn grouping_sets_sql(seed: u64, count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'disorder' '2 seconds', 'cities' '6',
         'riders' '50', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'riders' '30', 'disorder' '2 seconds',
         'watermark' 'event_time - INTERVAL ''2 seconds''');

CREATE EXTERNAL TABLE rolled STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE cubed STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE sets STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO rolled
SELECT date_bin(INTERVAL '5 seconds', event_time) AS w, geohash(lat, lon, 2) AS region,
       geohash(lat, lon, 4) AS cell, count(*) AS n, count(DISTINCT rider_id) AS riders
FROM rides GROUP BY date_bin(INTERVAL '5 seconds', event_time), ROLLUP(geohash(lat, lon, 2), geohash(lat, lon, 4));

INSERT INTO cubed
SELECT date_bin(INTERVAL '4 seconds', event_time) AS w, user_id, channel, count(*) AS n,
       sum(fee) AS fees, max(amount) AS hi
FROM payments GROUP BY date_bin(INTERVAL '4 seconds', event_time), CUBE(user_id, channel);

INSERT INTO sets
SELECT date_bin(INTERVAL '3 seconds', event_time) AS w, merchant, approved, count(*) AS n,
       min(amount) AS lo
FROM payments
GROUP BY GROUPING SETS ((date_bin(INTERVAL '3 seconds', event_time), merchant),
                        (date_bin(INTERVAL '3 seconds', event_time), approved),
                        (date_bin(INTERVAL '3 seconds', event_time)));
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_sets_rollup_and_cube_in_a_window_equal_batch() {
    for seed in 0..4u64 {
        for (sizing, count) in [
            (BatchSizing::Fixed(1), 120),
            (BatchSizing::Fixed(7), 600),
            (BatchSizing::Fixed(8192), 600),
            (
                BatchSizing::Random {
                    min: 1,
                    max: 300,
                    seed: seed + 5,
                },
                600,
            ),
        ] {
            let p = pipeline(&grouping_sets_sql(seed, count)).await;
            let input = rows(&p).await;
            for order in [InputOrder::InOrder, InputOrder::Shuffled] {
                let workers = 1 + (seed as usize) % 4;
                let report = parity(&p, &input, sizing.clone(), order, seed, workers).await;
                let context = format!("seed {seed}, {sizing:?}, {order:?}, {workers} workers");
                assert_exact(&report, &context);
                assert_eq!(report.sinks.len(), 3);
                assert!(
                    report.sinks.iter().all(|s| s.total > 0),
                    "{context}: every sink got rows: {report:?}"
                );
            }
        }
    }
}

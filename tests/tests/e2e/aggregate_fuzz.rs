//! The aggregate-parity fuzzer: every aggregate the streaming planner accepts must give the
//! same answer whatever the row order, micro-batch size and partitioning, in batch and in
//! streaming; every aggregate whose answer depends on row order must be refused by streaming
//! with the function's name and a deterministic rewrite.
//!
//! Input is the `payments` generator (NULLs in every nullable column, NaN of both signs, ±0.0,
//! ±inf, hot users, duplicate event times, rows on window edges). Each aggregate runs in three
//! shapes: per user per 2-second window, per 30-second window (large groups, so sketches hold
//! more values than their exact size), and keyed per merchant (upserts). Batch runs over the
//! rows as read, reversed over 3 partitions, and shuffled over 4 partitions in 17-row batches;
//! streaming runs over random micro-batch sizes, shuffled within the watermark, on 1 to 3
//! workers. `VOLLEY_FUZZ_SEEDS` (default 2) sets how many seeds run.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::UInt32Array;
use arrow::compute::{concat_batches, take_record_batch};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionConfig;
use volley_connectors::ConnectorRegistry;
use volley_engine::batch::run_inserts;
use volley_engine::compare::{Fold, compare_sink, key_indexes};
use volley_engine::driver::{BatchSizing, splitmix64};
use volley_engine::verify::{InputOrder, VerifyOptions, compare_outputs, stream_outputs};
use volley_sql::Pipeline;
use volley_sql::stream::{QueryPlan, batch_context_with};

use crate::harness::{Rows, pipeline, rows};

/// What an aggregate must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The same answer in every order, batch and streaming.
    Parity,
    /// Refused by streaming; the message contains this text (and the function's name).
    Refused(&'static str),
}

/// Every aggregate family the planner knows, over every column type the payments stream has.
/// `amount` is a DOUBLE with NaN/±0/±inf/NULL; `fee` a nullable DECIMAL(10,2); `channel` a
/// nullable INT; `merchant` a nullable VARCHAR; `approved` a nullable BOOLEAN.
const CASES: &[(&str, Expect)] = &[
    ("count(*)", Expect::Parity),
    ("count(amount)", Expect::Parity),
    ("count(DISTINCT merchant)", Expect::Parity),
    ("count(DISTINCT amount)", Expect::Parity),
    ("count(*) FILTER (WHERE amount > 0)", Expect::Parity),
    ("sum(channel)", Expect::Parity),
    ("sum(amount)", Expect::Parity),
    ("sum(fee)", Expect::Parity),
    ("sum(DISTINCT channel)", Expect::Parity),
    ("sum(channel) FILTER (WHERE approved)", Expect::Parity),
    ("avg(channel)", Expect::Parity),
    ("avg(amount)", Expect::Parity),
    ("avg(fee)", Expect::Parity),
    ("avg(DISTINCT fee)", Expect::Parity),
    ("min(amount)", Expect::Parity),
    ("max(amount)", Expect::Parity),
    ("min(CAST(amount AS REAL))", Expect::Parity),
    ("max(CAST(amount AS REAL))", Expect::Parity),
    ("max(amount) FILTER (WHERE user_id = 1)", Expect::Parity),
    ("min(channel)", Expect::Parity),
    ("max(fee)", Expect::Parity),
    ("min(merchant)", Expect::Parity),
    ("max(merchant)", Expect::Parity),
    (
        "min(CASE WHEN approved THEN event_time END)",
        Expect::Parity,
    ),
    (
        "max(CASE WHEN approved THEN event_time END)",
        Expect::Parity,
    ),
    ("median(amount)", Expect::Parity),
    ("median(channel)", Expect::Parity),
    ("median(fee)", Expect::Parity),
    ("stddev(amount)", Expect::Parity),
    ("stddev(CAST(fee AS DOUBLE))", Expect::Parity),
    ("stddev_pop(CAST(channel AS DOUBLE))", Expect::Parity),
    ("var_samp(CAST(fee AS DOUBLE))", Expect::Parity),
    ("var_pop(amount)", Expect::Parity),
    (
        "corr(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "covar_samp(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    ("covar_pop(amount, CAST(channel AS DOUBLE))", Expect::Parity),
    (
        "covar_samp(CAST(channel AS DOUBLE), amount)",
        Expect::Parity,
    ),
    ("corr(amount, CAST(channel AS DOUBLE))", Expect::Parity),
    (
        "regr_slope(amount, CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "regr_intercept(CAST(channel AS DOUBLE), amount)",
        Expect::Parity,
    ),
    ("regr_r2(amount, CAST(channel AS DOUBLE))", Expect::Parity),
    ("regr_avgx(CAST(channel AS DOUBLE), amount)", Expect::Parity),
    ("regr_avgy(amount, CAST(channel AS DOUBLE))", Expect::Parity),
    ("regr_sxx(CAST(channel AS DOUBLE), amount)", Expect::Parity),
    ("regr_syy(amount, CAST(channel AS DOUBLE))", Expect::Parity),
    (
        "regr_count(amount, CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    ("stddev_pop(amount)", Expect::Parity),
    ("var_samp(amount)", Expect::Parity),
    ("sum(DISTINCT amount)", Expect::Parity),
    ("avg(DISTINCT amount)", Expect::Parity),
    ("median(DISTINCT amount)", Expect::Parity),
    ("array_agg(DISTINCT amount ORDER BY amount)", Expect::Parity),
    (
        "regr_slope(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "regr_intercept(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "regr_count(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "regr_r2(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "regr_avgx(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    (
        "regr_sxy(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE))",
        Expect::Parity,
    ),
    ("bool_and(approved)", Expect::Parity),
    ("bool_or(approved)", Expect::Parity),
    ("bit_and(channel)", Expect::Parity),
    ("bit_or(channel)", Expect::Parity),
    ("bit_xor(channel)", Expect::Parity),
    ("first_value(amount ORDER BY payment_id)", Expect::Parity),
    ("last_value(merchant ORDER BY payment_id)", Expect::Parity),
    ("first_value(amount ORDER BY event_time)", Expect::Parity),
    (
        "last_value(channel ORDER BY event_time DESC)",
        Expect::Parity,
    ),
    ("first_value(amount)", Expect::Refused("ORDER BY")),
    ("last_value(merchant)", Expect::Refused("ORDER BY")),
    ("nth_value(channel, 2 ORDER BY payment_id)", Expect::Parity),
    ("array_agg(channel ORDER BY payment_id)", Expect::Parity),
    ("array_agg(amount ORDER BY event_time)", Expect::Parity),
    ("array_agg(DISTINCT channel)", Expect::Refused("ORDER BY")),
    ("array_agg(channel)", Expect::Refused("ORDER BY")),
    (
        "string_agg(merchant, '|' ORDER BY payment_id)",
        Expect::Parity,
    ),
    (
        "string_agg(merchant, '|' ORDER BY event_time)",
        Expect::Parity,
    ),
    ("string_agg(merchant, '|')", Expect::Refused("ORDER BY")),
    ("any_value(merchant)", Expect::Refused("any_value")),
    ("approx_distinct(merchant)", Expect::Parity),
    ("approx_distinct(channel)", Expect::Parity),
    ("approx_median(amount)", Expect::Refused("median")),
    (
        "approx_percentile_cont(CAST(fee AS DOUBLE), 0.9)",
        Expect::Refused("percentile_cont"),
    ),
    (
        "approx_percentile_cont_with_weight(CAST(fee AS DOUBLE), CAST(channel AS DOUBLE), 0.5)",
        Expect::Refused("percentile_cont"),
    ),
    (
        "percentile_cont(0.9) WITHIN GROUP (ORDER BY amount)",
        Expect::Parity,
    ),
];

/// The three shapes: (query over `{agg}`, merge key of its sink).
const SHAPES: &[(&str, Option<&str>)] = &[
    (
        "SELECT user_id AS k, date_bin(INTERVAL '2 seconds', event_time) AS w, {agg} AS v FROM payments GROUP BY 1, 2",
        None,
    ),
    (
        "SELECT date_bin(INTERVAL '30 seconds', event_time) AS w, {agg} AS v FROM payments GROUP BY 1",
        None,
    ),
    (
        "SELECT merchant AS k, {agg} AS v FROM payments GROUP BY 1",
        Some("k"),
    ),
];

fn source(seed: u64, count: u64) -> String {
    format!(
        "CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
         OPTIONS ('count' '{count}', 'rate' '20', 'seed' '{seed}', 'riders' '25',
                  'disorder' '2 seconds', 'watermark' 'event_time - INTERVAL ''2 seconds''');\n"
    )
}

/// One sink and INSERT per shape of `agg`, named `{prefix}_{shape}`.
fn inserts(prefix: &str, agg: &str) -> String {
    let mut sql = String::new();
    for (i, (query, key)) in SHAPES.iter().enumerate() {
        let options = key.map_or(String::new(), |k| format!(" OPTIONS ('merge_key' '{k}')"));
        sql.push_str(&format!(
            "CREATE EXTERNAL TABLE {prefix}_{i} STORED AS BLACKHOLE LOCATION 'x'{options};\n\
             INSERT INTO {prefix}_{i} {};\n",
            query.replace("{agg}", agg)
        ));
    }
    sql
}

/// Streaming's verdict on one aggregate: `Ok` when every shape plans, else the refusal.
async fn plan_alone(agg: &str) -> Result<(), String> {
    let sql = source(1, 100) + &inserts("a", agg);
    let p = Pipeline::parse(&sql, &ConnectorRegistry::builtin())
        .await
        .map_err(|e| e.to_string())?;
    crate::harness::try_plans(&p).await.map(|_| ())
}

/// A seeded permutation of `batches`' rows, cut into `partitions` partitions of `rows`-row
/// batches (reversed when `seed` is 0).
fn scramble(
    batches: &[RecordBatch],
    seed: u64,
    partitions: usize,
    rows: usize,
) -> Vec<Vec<RecordBatch>> {
    let schema = batches[0].schema();
    let all = concat_batches(&schema, batches).unwrap();
    let n = all.num_rows();
    let mut order: Vec<u32> = (0..n as u32).rev().collect();
    if seed != 0 {
        order.sort_by_key(|i| splitmix64(seed ^ u64::from(*i)));
    }
    let shuffled = take_record_batch(&all, &UInt32Array::from(order)).unwrap();
    let mut out = vec![Vec::new(); partitions];
    for (i, start) in (0..n).step_by(rows).enumerate() {
        out[i % partitions].push(shuffled.slice(start, rows.min(n - start)));
    }
    out
}

/// Batch outputs with the input split as given, in a context with `partitions` partitions.
async fn batch_with(
    p: &Pipeline,
    rows: &Rows,
    split: impl Fn(&[RecordBatch]) -> Vec<Vec<RecordBatch>>,
    partitions: usize,
) -> BTreeMap<String, Vec<RecordBatch>> {
    let ctx = batch_context_with(
        SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(64),
    );
    for (name, (schema, batches)) in rows {
        let table = MemTable::try_new(Arc::clone(schema), split(batches)).unwrap();
        ctx.register_table(name.as_str(), Arc::new(table)).unwrap();
    }
    run_inserts(&ctx, p).await.unwrap()
}

/// Sinks of `a` and `b` that differ, keyed by the plans' upsert keys.
fn batch_differences(
    plans: &[QueryPlan],
    a: &BTreeMap<String, Vec<RecordBatch>>,
    b: &BTreeMap<String, Vec<RecordBatch>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for plan in plans {
        let names: Vec<String> = plan
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let key = key_indexes(&plan.target, &names, &plan.key_columns).unwrap();
        let empty = Vec::new();
        let theirs = vec![(0, b.get(&plan.target).cloned().unwrap_or_default())];
        let cmp = compare_sink(
            &plan.target,
            &names,
            &key,
            Fold::Append,
            a.get(&plan.target).unwrap_or(&empty),
            &theirs,
            2,
        )
        .unwrap();
        if cmp.matched != cmp.total {
            out.push(format!("{}: {:?}", plan.target, cmp.differences));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_aggregate_is_order_independent_and_the_rest_are_refused() {
    let seeds: u64 = std::env::var("VOLLEY_FUZZ_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // `VOLLEY_FUZZ_ONLY=text` runs only the aggregates whose SQL contains `text`.
    let only = std::env::var("VOLLEY_FUZZ_ONLY").unwrap_or_default();
    let mut verdicts = Vec::new();
    let mut accepted = Vec::new();
    let mut wrong = Vec::new();
    for (i, (agg, expect)) in CASES.iter().enumerate() {
        if !agg.contains(only.as_str()) {
            continue;
        }
        match (plan_alone(agg).await, expect) {
            (Ok(()), Expect::Parity) => accepted.push((i, *agg)),
            (Err(e), Expect::Refused(hint)) => {
                let name = agg.split('(').next().unwrap_or_default();
                if e.contains(name) && e.contains(hint) {
                    verdicts.push(format!("{agg}: refused by streaming: {e}"));
                } else {
                    wrong.push(format!(
                        "{agg}: refused without naming {name} and {hint}: {e}"
                    ));
                }
            }
            (Ok(()), Expect::Refused(_)) => wrong.push(format!(
                "{agg}: accepted, but its answer depends on row order"
            )),
            (Err(e), Expect::Parity) => wrong.push(format!("{agg}: refused: {e}")),
        }
    }
    // Every accepted aggregate in one pipeline: one batch reference, two batch re-orderings
    // and two streaming runs per seed.
    let mut differs: BTreeMap<usize, Vec<String>> = BTreeMap::new();

    for seed in 0..seeds {
        let mut sql = source(seed, 1500);
        for (i, agg) in &accepted {
            sql.push_str(&inserts(&format!("a{i}"), agg));
        }
        let p = pipeline(&sql).await;
        let input = rows(&p).await;
        let plans = crate::harness::plans(&p).await;
        let case_of = |target: &str| -> usize {
            target[1..]
                .split('_')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap()
        };
        let reference = batch_with(&p, &input, |b| vec![b.to_vec()], 1).await;

        for (variant, partitions, split_seed) in [("reversed", 3, 0), ("shuffled", 4, seed + 1)] {
            let other = batch_with(
                &p,
                &input,
                |b| scramble(b, split_seed, partitions, 17),
                partitions,
            )
            .await;
            for diff in batch_differences(&plans, &reference, &other) {
                let case = case_of(&diff);
                differs
                    .entry(case)
                    .or_default()
                    .push(format!("batch {variant} (seed {seed}): {diff}"));
            }
        }
        for (run, max) in [(0u64, 50usize), (1, 1000)] {
            let opts = VerifyOptions {
                sizing: BatchSizing::Random {
                    min: 1,
                    max,
                    seed: seed * 7 + run,
                },
                order: InputOrder::Shuffled,
                seed: seed * 13 + run,
                max_differences: 2,
                workers: Some(1 + ((seed + run) % 3) as usize),
            };
            let (stream, stream_plans) =
                stream_outputs(&p, &ConnectorRegistry::builtin(), &input, &opts)
                    .await
                    .unwrap();
            let report = compare_outputs(&p, &stream_plans, &reference, &stream, 2).unwrap();
            for sink in &report.sinks {
                assert!(sink.total > 0, "sink {} compared no rows", sink.sink);
                if sink.matched != sink.total {
                    differs
                        .entry(case_of(&sink.sink))
                        .or_default()
                        .push(format!(
                            "stream (seed {seed}, max {max}): {}: {}/{} {:?}",
                            sink.sink, sink.matched, sink.total, sink.differences
                        ));
                }
            }
        }
    }
    for (i, agg) in &accepted {
        match differs.get(i) {
            None => verdicts.push(format!(
                "{agg}: same answer in every order (batch and streaming)"
            )),
            Some(d) => {
                let first: Vec<String> = d
                    .iter()
                    .take(3)
                    .map(|t| t.chars().take(400).collect())
                    .collect();
                wrong.push(format!(
                    "{agg}: depends on order ({} runs differ), e.g. {first:#?}",
                    d.len()
                ));
            }
        }
    }
    eprintln!("aggregate verdicts over {seeds} seed(s):");
    for v in &verdicts {
        eprintln!("  {v}");
    }
    assert!(
        wrong.is_empty(),
        "{} aggregates misbehave:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

//! Total-order MIN/MAX: every permutation and partitioning of a group gives one answer, the one
//! PostgreSQL and DuckDB give.

use std::sync::Arc;

use arrow::array::{Array, Float32Array, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

fn context(partitions: usize) -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(2),
    );
    crate::register_all(&ctx);
    ctx
}

/// Every permutation of `values` (small inputs only).
fn permutations(values: &[Option<f64>]) -> Vec<Vec<Option<f64>>> {
    if values.len() <= 1 {
        return vec![values.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..values.len() {
        let mut rest = values.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

/// `(min, max)` of `values` grouped (one group, key 1) and ungrouped, as f64 and as f32, with
/// the rows spread over `partitions` partitions of one-row batches.
async fn min_max(values: &[Option<f64>], partitions: usize) -> Vec<(Option<f64>, Option<f64>)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Float32, true),
    ]));
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (i, v) in values.iter().enumerate() {
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Float64Array::from(vec![*v])),
                Arc::new(Float32Array::from(vec![v.map(|v| v as f32)])),
            ],
        )
        .unwrap();
        parts[i % partitions].push(batch);
    }
    let ctx = context(partitions);
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT min(x), max(x) FROM t GROUP BY k",
        "SELECT min(x), max(x) FROM t",
        "SELECT CAST(min(y) AS DOUBLE), CAST(max(y) AS DOUBLE) FROM t GROUP BY k",
        "SELECT CAST(min(y) AS DOUBLE), CAST(max(y) AS DOUBLE) FROM t",
    ] {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let rows: Vec<(Option<f64>, Option<f64>)> = batches
            .iter()
            .flat_map(|b| {
                let lo = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
                let hi = b.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
                (0..b.num_rows())
                    .map(|i| {
                        let get = |a: &Float64Array| (!a.is_null(i)).then(|| a.value(i));
                        (get(lo), get(hi))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rows.len(), 1, "{sql}: one row");
        out.push(rows[0]);
    }
    out
}

/// Bit-exact equality (so -0.0 differs from +0.0), every NaN equal to every NaN.
fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        (Some(x), Some(y)) => x.to_bits() == y.to_bits(),
        (None, None) => true,
        _ => false,
    }
}

async fn check(values: &[Option<f64>], want_min: Option<f64>, want_max: Option<f64>) {
    for order in permutations(values) {
        for partitions in [1, 3] {
            for (i, (lo, hi)) in min_max(&order, partitions).await.into_iter().enumerate() {
                // Queries 2 and 3 aggregate the FLOAT column.
                let narrow = |v: Option<f64>| {
                    if i >= 2 {
                        v.map(|v| v as f32 as f64)
                    } else {
                        v
                    }
                };
                let (want_min, want_max) = (narrow(want_min), narrow(want_max));
                assert!(
                    same(lo, want_min) && same(hi, want_max),
                    "{order:?} ({partitions} partitions, query {i}): min {lo:?} max {hi:?}, want {want_min:?} {want_max:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_nan_is_above_every_number_whatever_the_order() {
    // The case seen on payment data: max = 28.84 for a group holding 259.38 and a NaN.
    check(
        &[Some(259.38), Some(f64::NAN), Some(28.84)],
        Some(28.84),
        Some(f64::NAN),
    )
    .await;
    check(
        &[Some(f64::NAN), None, Some(-1.5), Some(f64::INFINITY)],
        Some(-1.5),
        Some(f64::NAN),
    )
    .await;
    // A NaN with the sign bit set (what 0.0/0.0 gives on x86) is a NaN like any other.
    check(&[Some(-f64::NAN), Some(3.0)], Some(3.0), Some(f64::NAN)).await;
    check(&[Some(f64::NAN), None], Some(f64::NAN), Some(f64::NAN)).await;
}

#[tokio::test]
async fn infinities_and_signed_zeros_are_ordered() {
    check(
        &[Some(f64::NEG_INFINITY), Some(f64::NEG_INFINITY)],
        Some(f64::NEG_INFINITY),
        Some(f64::NEG_INFINITY),
    )
    .await;
    check(
        &[Some(f64::INFINITY), None],
        Some(f64::INFINITY),
        Some(f64::INFINITY),
    )
    .await;
    check(&[Some(-0.0), Some(0.0), None], Some(-0.0), Some(0.0)).await;
    check(
        &[Some(f64::NEG_INFINITY), Some(-0.0), Some(f64::INFINITY)],
        Some(f64::NEG_INFINITY),
        Some(f64::INFINITY),
    )
    .await;
}

#[tokio::test]
async fn only_nulls_give_null() {
    check(&[None, None], None, None).await;
}

#[tokio::test]
async fn other_types_still_use_the_built_ins() {
    let ctx = context(2);
    let batches = ctx
        .sql("SELECT min(v), max(v), max(s) FROM (VALUES (3, 'b'), (-7, 'a'), (NULL, 'c')) AS t(v, s)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        text.contains("| -7") && text.contains("| 3") && text.contains("| c"),
        "{text}"
    );
}

/// Ranks order every float as SQL does, and turn back into the same bits (every NaN into the
/// one NaN), at each float width.
#[test]
fn ranks_follow_the_total_order_and_invert() {
    use super::total_order::TotalOrderFloat;
    use arrow::datatypes::{Float16Type, Float32Type, Float64Type};
    type F16 = <Float16Type as arrow::datatypes::ArrowPrimitiveType>::Native;

    // Ascending in SQL's order; NaNs (of either sign) tie at the top.
    let f64s = [
        f64::NEG_INFINITY,
        f64::MIN,
        -1.5,
        -f64::MIN_POSITIVE,
        -5e-324,
        -0.0,
        0.0,
        5e-324,
        1.5,
        f64::MAX,
        f64::INFINITY,
    ];
    let ranks: Vec<i64> = f64s.iter().map(|v| Float64Type::rank(*v)).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    for v in f64s {
        assert_eq!(
            Float64Type::unrank(Float64Type::rank(v)).to_bits(),
            v.to_bits()
        );
    }
    let nan = Float64Type::rank(f64::NAN);
    assert_eq!(nan, Float64Type::rank(-f64::NAN));
    assert!(nan > Float64Type::rank(f64::INFINITY));
    assert!(Float64Type::unrank(nan).is_nan());

    let f32s: Vec<f32> = f64s.iter().map(|v| *v as f32).collect();
    for (v, w) in f32s.iter().zip(&f32s[1..]) {
        let (a, b) = (Float32Type::rank(*v), Float32Type::rank(*w));
        // Narrowing merges neighbours (f64::MIN and -inf; the subnormals and zeros).
        assert!(a <= b, "{v} {w}");
        assert_eq!(Float32Type::unrank(a).to_bits(), v.to_bits());
    }
    assert_eq!(Float32Type::rank(f32::NAN), Float32Type::rank(-f32::NAN));
    assert!(Float32Type::rank(-0.0) < Float32Type::rank(0.0));

    let halves = [
        F16::NEG_INFINITY,
        F16::from_f32(-2.5),
        F16::NEG_ZERO,
        F16::ZERO,
        F16::from_f32(2.5),
        F16::INFINITY,
    ];
    let ranks: Vec<i64> = halves.iter().map(|v| Float16Type::rank(*v)).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    for v in halves {
        assert_eq!(
            Float16Type::unrank(Float16Type::rank(v)).to_bits(),
            v.to_bits()
        );
    }
    assert!(Float16Type::rank(F16::NAN) > Float16Type::rank(F16::INFINITY));
    assert!(Float16Type::unrank(Float16Type::rank(-F16::NAN)).is_nan());
}

/// Mixed rows (NaN of both signs, ±0, -inf, NULL) and 400 plain numbers, as table `t(k, x)`.
const ROWS: &str = "(SELECT * FROM (VALUES
    (0, 259.38), (1, -0.0), (2, CAST('NaN' AS DOUBLE)), (3, 0.0), (4, 28.84),
    (5, CAST('-inf' AS DOUBLE)), (6, NULL), (7, -CAST('NaN' AS DOUBLE)),
    (8, 1.0), (9, 2.0), (10, 3.0), (11, 4.0)
  UNION ALL SELECT value + 100, CAST(value AS DOUBLE) / 7 FROM generate_series(1, 400))
  AS v(k, x)) AS t";

/// A context whose partial aggregation gives up at once (as it does when nearly every row is
/// its own group), over 8-row batches.
fn skipping_context() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(8);
    let options = &mut config.options_mut().execution;
    options.skip_partial_aggregation_probe_rows_threshold = 1;
    options.skip_partial_aggregation_probe_ratio_threshold = 0.0;
    let ctx = SessionContext::new_with_config(config);
    crate::register_all(&ctx);
    ctx
}

async fn floats(ctx: &SessionContext, sql: &str) -> Vec<Vec<f64>> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    b.columns()
        .iter()
        .map(|c| {
            let c = c.as_any().downcast_ref::<Float64Array>().unwrap();
            c.values().to_vec()
        })
        .collect()
}

/// When partial aggregation stops paying, DataFusion passes rows straight through as state:
/// the answer is the same.
#[tokio::test]
async fn skipped_partial_aggregation_gives_the_same_answer() {
    let ctx = skipping_context();
    let sql = format!(
        "SELECT min(x) AS lo, max(x) AS hi, CAST(k % 2 AS DOUBLE) AS g FROM {ROWS} GROUP BY k % 2 ORDER BY g"
    );
    let analyzed = ctx
        .sql(&format!("EXPLAIN ANALYZE {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let analyzed = arrow::util::pretty::pretty_format_batches(&analyzed)
        .unwrap()
        .to_string();
    let skipped = analyzed
        .split("skipped_aggregation_rows=")
        .skip(1)
        .any(|rest| !rest.starts_with('0'));
    assert!(skipped, "partial aggregation was not skipped:\n{analyzed}");
    let got = floats(&ctx, &sql).await;
    // Even keys: 259.38, NaN, 28.84, NULL, 1.0, 3.0 and 2/7 … 400/7. Odd: -0.0, 0.0, -inf,
    // -NaN, 2.0, 4.0 and 1/7 … 399/7.
    assert_eq!(got[0], [2.0 / 7.0, f64::NEG_INFINITY]);
    assert!(got[1].iter().all(|v| v.is_nan()), "{:?}", got[1]);
}

/// Ungrouped over whole 8-value lanes, with and without NULLs among them.
#[tokio::test]
async fn ungrouped_lanes_with_and_without_nulls() {
    let ctx = skipping_context();
    for (filter, want_lo, want_hi) in [
        ("TRUE", f64::NEG_INFINITY, f64::NAN),
        ("k >= 100", 1.0 / 7.0, 400.0 / 7.0),
        ("k >= 100 AND k < 500", 1.0 / 7.0, 399.0 / 7.0),
        ("k <> 5 AND k <> 2 AND k <> 7", -0.0, 259.38),
        ("k = 1 OR k = 3 OR k = 6", -0.0, 0.0),
    ] {
        let sql = format!("SELECT min(x), max(x) FROM {ROWS} WHERE {filter}");
        let got = floats(&ctx, &sql).await;
        assert!(
            same(Some(got[0][0]), Some(want_lo)) && same(Some(got[1][0]), Some(want_hi)),
            "{filter}: {got:?}"
        );
    }
}

/// A sliding sum and average over floats stay right once a NaN or an infinity has left the
/// frame (DataFusion's own answer NaN for good); whole-frame sums are DataFusion's.
#[tokio::test]
async fn sliding_sums_recover_when_nan_and_infinities_leave_the_frame() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("t", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Float32, true),
    ]));
    let xs = [
        Some(1.0),
        Some(f64::NAN),
        Some(2.0),
        Some(4.0),
        Some(f64::INFINITY),
        Some(8.0),
        Some(3.0),
        None,
        None,
        Some(f64::NEG_INFINITY),
        Some(f64::INFINITY),
        Some(-0.5),
    ];
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=12)),
            Arc::new(Float64Array::from(xs.to_vec())),
            Arc::new(Float32Array::from(
                xs.iter().map(|v| v.map(|v| v as f32)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let ctx = context(1);
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table("f", Arc::new(table)).unwrap();
    let sql = "SELECT sum(x) OVER w AS s, avg(x) OVER w AS a, sum(y) OVER w AS s32,
                      sum(x) OVER (ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running
               FROM f WINDOW w AS (ORDER BY t ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
               ORDER BY t";
    let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let column = |name: &str| -> Vec<Option<f64>> {
        rows.iter()
            .flat_map(|b| {
                let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Float64)
                    .unwrap();
                let c = c.as_any().downcast_ref::<Float64Array>().unwrap().clone();
                (0..c.len())
                    .map(|i| c.is_valid(i).then(|| c.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    // Pairs of neighbours, by hand.
    let sums = [
        Some(1.0),
        Some(nan),
        Some(nan),
        Some(6.0),
        Some(inf),
        Some(inf),
        Some(11.0),
        Some(3.0),
        None,
        Some(-inf),
        Some(nan),
        Some(inf),
    ];
    let avgs = [
        Some(1.0),
        Some(nan),
        Some(nan),
        Some(3.0),
        Some(inf),
        Some(inf),
        Some(5.5),
        Some(3.0),
        None,
        Some(-inf),
        Some(nan),
        Some(inf),
    ];
    let same = |a: &[Option<f64>], b: &[Option<f64>]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => (x.is_nan() && y.is_nan()) || x == y,
                (None, None) => true,
                _ => false,
            })
    };
    assert!(same(&column("s"), &sums), "sum: {:?}", column("s"));
    assert!(same(&column("a"), &avgs), "avg: {:?}", column("a"));
    assert!(
        same(&column("s32"), &sums),
        "sum of REAL: {:?}",
        column("s32")
    );
    let running = column("running");
    assert!(
        running.iter().skip(1).all(|v| v.is_some_and(f64::is_nan)),
        "a running sum holds the NaN for good, as in every engine: {running:?}"
    );
}

/// An exact sum is the correctly rounded sum of the values it holds, whatever was added and
/// taken out before and in whatever order: what a sliding frame's sum needs to be the same in
/// a long-running stream and in a fresh batch.
#[test]
fn exact_sums_round_once_and_forget_what_left() {
    let sum = |values: &[f64]| {
        let mut s = super::ExactSum::default();
        values.iter().for_each(|v| s.add(*v));
        s.value()
    };
    assert_eq!(
        sum(&[0.1; 10]),
        1.0,
        "ten tenths, where naive addition gives 0.9999999999999999"
    );
    assert_eq!(sum(&[1e16, 1.0, -1e16]), 1.0);
    assert_eq!(sum(&[1e300, 1e-300, -1e300]), 1e-300);
    assert_eq!(sum(&[]), 0.0);
    assert!(sum(&[-0.0]).is_sign_positive(), "a sum of zeros is +0.0");
    // Half-way cases round to even: 1 + 2^-53 is exactly between 1 and the next float.
    assert_eq!(sum(&[1.0, f64::EPSILON / 2.0]), 1.0);
    assert_eq!(
        sum(&[1.0, f64::EPSILON / 2.0, f64::EPSILON / 1e6]),
        1.0 + f64::EPSILON
    );
    // A frame that slides over amounts leaves no residue once they have all left.
    let amounts: Vec<f64> = (0..500)
        .map(|i| ((i * 7919) % 1000) as f64 / 7.0 + 0.01)
        .collect();
    let mut s = super::ExactSum::default();
    for (i, a) in amounts.iter().enumerate() {
        s.add(*a);
        if i >= 3 {
            s.add(-amounts[i - 3]);
        }
    }
    for a in &amounts[amounts.len() - 3..] {
        s.add(-a);
    }
    assert_eq!(s.value(), 0.0);
    let mut reversed = amounts.clone();
    reversed.reverse();
    assert_eq!(
        sum(&amounts),
        sum(&reversed),
        "the order of additions does not matter"
    );
}

/// Sliding variances and standard deviations are computed from exact sums: a frame of equal
/// values has variance 0 (DataFusion's running variance drifts negative, a NaN deviation),
/// and the answer does not depend on the rows that left the frame before.
#[tokio::test]
async fn sliding_variances_are_exact_and_forget_what_left() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("t", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
    ]));
    let mut xs: Vec<Option<f64>> = (0..40)
        .map(|i| Some(((i * 7919) % 1000) as f64 / 3.0))
        .collect();
    xs.extend([Some(0.33); 6]);
    xs.extend([None, Some(f64::NAN), Some(1.0), Some(2.0), Some(4.0)]);
    let n = xs.len() as i64;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=n)),
            Arc::new(Float64Array::from(xs.clone())),
        ],
    )
    .unwrap();
    let ctx = context(1);
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table("f", Arc::new(table)).unwrap();
    let sql = "SELECT var_pop(x) OVER w AS vp, var_samp(x) OVER w AS vs, stddev(x) OVER w AS sd,
                      stddev_pop(x) OVER w AS sdp
               FROM f WINDOW w AS (ORDER BY t ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) ORDER BY t";
    let columns = floats(&ctx, sql).await;
    let rows: Vec<Vec<f64>> = (0..columns[0].len())
        .map(|i| columns.iter().map(|c| c[i]).collect())
        .collect();
    // By hand, from the frame's values (two-pass, exact enough for these).
    for (i, row) in rows.iter().enumerate() {
        let frame: Vec<f64> = xs[i.saturating_sub(2)..=i]
            .iter()
            .flatten()
            .copied()
            .collect();
        let count = frame.len() as f64;
        if frame.iter().any(|v| v.is_nan()) {
            assert!(row[0].is_nan() && row[2].is_nan(), "row {i}: {row:?}");
            continue;
        }
        let mean = frame.iter().sum::<f64>() / count;
        let m2: f64 = frame.iter().map(|v| (v - mean) * (v - mean)).sum();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300);
        assert!(
            close(row[0], m2 / count),
            "row {i}: var_pop {} vs {}",
            row[0],
            m2 / count
        );
        if count > 1.0 {
            assert!(
                close(row[1], m2 / (count - 1.0)),
                "row {i}: var_samp {row:?}"
            );
            assert!(
                close(row[2], (m2 / (count - 1.0)).sqrt()),
                "row {i}: stddev {row:?}"
            );
        }
        assert!(
            close(row[3], (m2 / count).sqrt()),
            "row {i}: stddev_pop {row:?}"
        );
    }
    // The frames of equal values: exactly 0, not a residue of the values before them.
    for row in &rows[42..46] {
        assert_eq!(row[0], 0.0, "{row:?}");
        assert_eq!(row[2], 0.0, "{row:?}");
    }
}

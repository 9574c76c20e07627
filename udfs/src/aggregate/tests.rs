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

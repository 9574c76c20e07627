//! `predict()` in SQL: results equal ONNX Runtime's, plan-time errors, NULL policies, and
//! failing rows isolated to dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow::datatypes::{Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::tests::{assert_close, columns, expected, load, reference};
use super::*;

/// A context with `predict()` over the fraud and embed models.
fn context(max_rows: usize) -> (SessionContext, Arc<ModelSet>) {
    let models = Arc::new(ModelSet::new([
        Arc::new(load("fraud", "examples/fraud/fraud.onnx", max_rows)),
        Arc::new(load("embed", "udfs/tests/data/embed.onnx", max_rows)),
    ]));
    let ctx = SessionContext::new();
    crate::register_all(&ctx);
    ctx.register_udf(predict_udf(Arc::clone(&models)));
    (ctx, models)
}

/// Registers `columns` as table `t` (columns a, b, c, …), cut into batches of `batch` rows.
fn register(ctx: &SessionContext, columns: Vec<ArrayRef>, batch: usize) {
    let names = ["a", "b", "c", "d", "e"];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .zip(names)
            .map(|(c, n)| Field::new(n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let whole = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let batches: Vec<RecordBatch> = (0..whole.num_rows())
        .step_by(batch)
        .map(|start| whole.slice(start, batch.min(whole.num_rows() - start)))
        .collect();
    let _ = ctx.deregister_table("t");
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
    )
    .unwrap();
}

async fn floats(ctx: &SessionContext, sql: &str) -> Vec<Option<f32>> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<Float32Array>().unwrap();
            (0..column.len())
                .map(|i| column.is_valid(i).then(|| column.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn predict_in_sql_equals_onnx_runtime_for_any_batch_size() {
    let reference = reference();
    let want = expected(&reference, "fraud", "score");
    for (batch, max_rows) in [(1, 8192), (7, 3), (64, 8192), (100, 16)] {
        let (ctx, _) = context(max_rows);
        register(&ctx, columns(&reference), batch);
        let got: Vec<f32> = floats(&ctx, "SELECT predict('fraud', a, b, c, d) FROM t")
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_close(
            &got,
            &want,
            &format!("batches of {batch}, max_rows {max_rows}"),
        );
    }
    // Several outputs come back as a struct, and a field of it is usable in SQL.
    let (ctx, _) = context(8192);
    register(&ctx, columns(&reference), 33);
    let got: Vec<f32> = floats(&ctx, "SELECT predict('embed', a, b, c, d)['score'] FROM t")
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_close(&got, &expected(&reference, "embed", "score"), "embed score");
}

#[tokio::test]
async fn plan_time_errors_name_the_model_and_its_input() {
    let (ctx, _) = context(8192);
    let reference = reference();
    let mut cols = columns(&reference);
    cols.push(Arc::new(arrow::array::StringArray::from(vec!["x"; 100])));
    register(&ctx, cols, 100);
    let plan_err = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { ctx.sql(sql).await.unwrap_err().to_string() }
    };
    let err = plan_err("SELECT predict('fraud', a, b, c) FROM t").await;
    assert!(
        err.contains("model 'fraud': input 'features' takes 4 values per row")
            && err.contains("passes 3"),
        "{err}"
    );
    let err = plan_err("SELECT predict('fraud', a, b, c, e) FROM t").await;
    assert!(
        err.contains("input 'features' takes numbers")
            && err.contains("value 4 of predict() is Utf8"),
        "{err}"
    );
    let err = plan_err("SELECT predict('nope', a) FROM t").await;
    assert!(
        err.contains("no model 'nope'") && err.contains("fraud") && err.contains("CREATE MODEL"),
        "{err}"
    );
    let err = plan_err("SELECT predict(e, a, b, c, d) FROM t").await;
    assert!(err.contains("string literal"), "{err}");
    // With no model declared at all.
    let bare = SessionContext::new();
    crate::register_all(&bare);
    let err = bare
        .sql("SELECT predict('fraud', 1.0)")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("none is declared"), "{err}");
}

/// A stand-in model: `0.5 * x0 + x1`, failing any call that holds a row with `x0 >= 16`
/// (as a model whose operator rejects an out-of-range value fails the whole call).
fn fails_on_large(calls: &AtomicUsize) -> impl Fn(&[ArrayRef]) -> Result<ArrayRef, ModelError> {
    move |cols: &[ArrayRef]| {
        calls.fetch_add(1, Ordering::SeqCst);
        let x0 = cols[0].as_any().downcast_ref::<Float64Array>().unwrap();
        let x1 = cols[1].as_any().downcast_ref::<Float64Array>().unwrap();
        if let Some(bad) = x0.values().iter().find(|v| **v >= 16.0) {
            return Err(ModelError::Run {
                model: "m".into(),
                rows: x0.len(),
                message: format!("index {bad} out of bounds"),
            });
        }
        let out: Float32Array = x0
            .values()
            .iter()
            .zip(x1.values())
            .map(|(a, b)| (0.5 * a + b) as f32)
            .collect();
        Ok(Arc::new(out) as ArrayRef)
    }
}

#[test]
fn rows_the_model_fails_on_alone_are_left_out() {
    // Failing rows at the edges, in runs, alone, and none; with and without NULL rows.
    let rows = 1000usize;
    let patterns: Vec<Vec<usize>> = vec![
        vec![],
        vec![0],
        vec![999],
        vec![3, 50, 51, 640, 999],
        (100..164).collect(),
        (0..1000).step_by(97).collect(),
    ];
    for bad in patterns {
        for with_nulls in [false, true] {
            let x0: Float64Array = (0..rows)
                .map(|i| {
                    if with_nulls && i % 250 == 7 {
                        None
                    } else if bad.contains(&i) {
                        Some(40.0 + i as f64)
                    } else {
                        Some((i % 16) as f64)
                    }
                })
                .collect();
            let x1 = Float64Array::from((0..rows).map(|i| i as f64 * 0.25).collect::<Vec<_>>());
            let calls = AtomicUsize::new(0);
            let run = fails_on_large(&calls);
            let scored = score_isolating(
                "m",
                NullPolicy::DeadLetter,
                &[Arc::new(x0.clone()), Arc::new(x1.clone())],
                &DataType::Float32,
                &run,
            )
            .unwrap();
            let values = scored
                .values
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap();
            assert_eq!(values.len(), rows);
            let null_row = |i: usize| with_nulls && i % 250 == 7;
            for i in 0..rows {
                if bad.contains(&i) || null_row(i) {
                    assert!(values.is_null(i), "row {i} must be NULL ({bad:?})");
                } else {
                    assert_eq!(
                        values.value(i),
                        (0.5 * x0.value(i) + x1.value(i)) as f32,
                        "row {i}"
                    );
                }
            }
            let mut failed: Vec<u32> = Vec::new();
            let mut nulls: Vec<u32> = Vec::new();
            for left_out in &scored.dead_letters {
                if left_out.reason.contains("NULL input") {
                    nulls.extend(&left_out.rows);
                } else {
                    assert!(
                        left_out
                            .reason
                            .starts_with("model 'm' failed on this row: index"),
                        "{}",
                        left_out.reason
                    );
                    failed.extend(&left_out.rows);
                }
            }
            failed.sort_unstable();
            let want: Vec<u32> = bad
                .iter()
                .map(|&i| i as u32)
                .filter(|&i| !null_row(i as usize))
                .collect();
            assert_eq!(failed, want, "failing rows, nulls {with_nulls}");
            assert_eq!(nulls.len(), if with_nulls { 4 } else { 0 });
            // Bisection stays cheap: about two calls per failing row per level.
            let levels = (rows as f64).log2().ceil() as usize;
            assert!(
                calls.load(Ordering::SeqCst) <= 2 + 2 * want.len().max(1) * levels,
                "{} calls",
                calls.load(Ordering::SeqCst)
            );
        }
    }
}

#[tokio::test]
async fn null_inputs_follow_the_null_policy() {
    let reference = reference();
    let mut cols = columns(&reference);
    let with_nulls: Float64Array = (0..100)
        .map(|i| (i % 10 != 4).then_some(i as f64))
        .collect();
    cols[0] = Arc::new(with_nulls);
    for policy in [NullPolicy::DeadLetter, NullPolicy::Null, NullPolicy::Fail] {
        let model = Arc::new(
            Model::load(
                "fraud",
                &super::tests::repo().join("examples/fraud/fraud.onnx"),
                &ModelOptions {
                    null_policy: policy,
                    ..ModelOptions::default()
                },
            )
            .unwrap(),
        );
        let models = Arc::new(ModelSet::new([model]));
        let ctx = SessionContext::new();
        ctx.register_udf(predict_udf(Arc::clone(&models)));
        register(&ctx, cols.clone(), 30);
        let sql = "SELECT predict('fraud', a, b, c, d) FROM t";
        if policy == NullPolicy::Fail {
            let err = ctx
                .sql(sql)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("NULL input") && err.contains("'fail'"),
                "{err}"
            );
            continue;
        }
        let got = floats(&ctx, sql).await;
        let nulls: Vec<usize> = (0..100).filter(|i| got[*i].is_none()).collect();
        assert_eq!(nulls, (0..100).filter(|i| i % 10 == 4).collect::<Vec<_>>());
        let letters: usize = models
            .take_rejected()
            .iter()
            .map(|r| r.rows.num_rows())
            .sum();
        let want = if policy == NullPolicy::DeadLetter {
            10
        } else {
            0
        };
        assert_eq!(letters, want, "{policy:?}");
    }
}

#[test]
fn a_call_that_fails_once_is_retried_before_bisecting() {
    let calls = AtomicUsize::new(0);
    let column: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
    let flaky = |cols: &[ArrayRef]| -> Result<ArrayRef, ModelError> {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(ModelError::Run {
                model: "m".into(),
                rows: cols[0].len(),
                message: "transient".into(),
            });
        }
        Ok(arrow::compute::cast(&cols[0], &DataType::Float32).unwrap())
    };
    let scored = score_isolating(
        "m",
        NullPolicy::DeadLetter,
        &[column],
        &DataType::Float32,
        &flaky,
    )
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one failure, one retry");
    assert!(scored.dead_letters.is_empty());
    assert_eq!(scored.values.len(), 3);
    assert_eq!(scored.values.null_count(), 0);
}

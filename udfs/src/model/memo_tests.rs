//! The inference memo through `predict()` in SQL: a recorded epoch replayed in other batch
//! sizes reads every score from the memo (no model run), a partial memo scores only the rows
//! it lacks, and a memo of another model file or a model with `memo` off is never read.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow::datatypes::{Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::tests::{columns, reference};
use super::*;

fn context(memo: bool) -> (SessionContext, Arc<ModelSet>) {
    let options = ModelOptions {
        max_rows: 16,
        memo,
        ..ModelOptions::default()
    };
    let path = super::tests::repo().join("examples/fraud/fraud.onnx");
    let model = Model::load("fraud", &path, &options).unwrap();
    let models = Arc::new(ModelSet::new([Arc::new(model)]));
    let ctx = SessionContext::new();
    ctx.register_udf(predict_udf(Arc::clone(&models)));
    (ctx, models)
}

/// The reference rows plus rows with −0, NaN, ±inf and a NULL, cut into `batch`-row batches.
fn register(ctx: &SessionContext, batch: usize) {
    let mut cols = columns(&reference());
    let extra: [ArrayRef; 4] = [
        Arc::new(Float64Array::from(vec![Some(-0.0), Some(f64::NAN), None])),
        Arc::new(arrow::array::Int64Array::from(vec![0, 1, 2])),
        Arc::new(Float64Array::from(vec![
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(1.0),
        ])),
        Arc::new(arrow::array::Int64Array::from(vec![3, 3, 3])),
    ];
    for (c, e) in cols.iter_mut().zip(extra) {
        *c = arrow::compute::concat(&[c.as_ref(), e.as_ref()]).unwrap();
    }
    let schema = Arc::new(Schema::new(
        cols.iter()
            .zip(["a", "b", "c", "d"])
            .map(|(c, n)| Field::new(n, c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let whole = RecordBatch::try_new(Arc::clone(&schema), cols).unwrap();
    let batches = (0..whole.num_rows())
        .step_by(batch)
        .map(|s| whole.slice(s, batch.min(whole.num_rows() - s)))
        .collect();
    let _ = ctx.deregister_table("t");
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
    )
    .unwrap();
}

/// Every score's bits, in row order (NULL as None).
async fn scores(ctx: &SessionContext) -> Vec<Option<u32>> {
    let sql = "SELECT predict('fraud', a, b, c, d) FROM t";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_any().downcast_ref::<Float32Array>().unwrap();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i).to_bits()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn stats(models: &ModelSet) -> ModelStats {
    models.get("fraud").unwrap().stats()
}

#[tokio::test]
async fn a_replayed_epoch_reads_its_scores_from_the_memo_whatever_its_batches() {
    let (ctx, models) = context(true);
    register(&ctx, 7);
    models.begin_epoch(5, true, Vec::new());
    let first = scores(&ctx).await;
    let memos = models.finish_epoch();
    let scored = stats(&models);
    let rows = first.len() - 1; // the NULL row is not scored
    assert_eq!(memos.len(), 1);
    assert_eq!(memos[0].rows(), rows);
    assert_eq!(scored.rows, rows as u64);
    assert!(
        memos[0]
            .sites
            .iter()
            .any(|s| s.starts_with("predict('fraud', "))
    );

    // Replayed in other batches: every score comes from the memo, bit for bit.
    register(&ctx, 13);
    assert!(models.begin_epoch(5, true, memos.clone()).is_empty());
    assert_eq!(scores(&ctx).await, first);
    let replayed = stats(&models);
    assert_eq!(replayed.calls, scored.calls, "no model run");
    assert_eq!(replayed.memo_rows, rows as u64);
    assert!(models.finish_epoch().is_empty(), "nothing new to write");

    // A memo lacking some rows: only those are scored.
    let mut partial = memos[0].clone();
    let keep = 40;
    partial.inputs.truncate(keep * partial.features);
    partial.outputs[0].truncate(keep);
    models.begin_epoch(5, true, vec![partial]);
    assert_eq!(scores(&ctx).await, first);
    let after = stats(&models);
    assert_eq!(after.rows - replayed.rows, (rows - keep) as u64);
    assert_eq!(after.memo_rows - replayed.memo_rows, keep as u64);
    assert_eq!(models.finish_epoch()[0].rows(), rows, "rewritten whole");

    // Another model file's memo is refused, and its (wrong) scores are not read.
    let mut other = memos[0].clone();
    other.sha256 = "0".repeat(64);
    for v in &mut other.outputs[0] {
        *v = 42.0;
    }
    let refused = models.begin_epoch(5, true, vec![other]);
    assert_eq!(refused.len(), 1);
    assert_eq!(scores(&ctx).await, first);
    assert_eq!(stats(&models).rows - after.rows, rows as u64);
}

#[tokio::test]
async fn a_model_with_memo_off_records_and_reads_nothing() {
    let (ctx, models) = context(false);
    register(&ctx, 9);
    models.begin_epoch(1, true, Vec::new());
    let first = scores(&ctx).await;
    assert!(models.finish_epoch().is_empty());
    // Even a memo handed over is not read.
    let (on_ctx, on_models) = context(true);
    register(&on_ctx, 9);
    on_models.begin_epoch(1, true, Vec::new());
    scores(&on_ctx).await;
    let memos = on_models.finish_epoch();
    assert_eq!(models.begin_epoch(1, true, memos).len(), 1);
    let before = stats(&models);
    assert_eq!(scores(&ctx).await, first);
    assert_eq!(stats(&models).memo_rows, 0);
    assert!(stats(&models).rows > before.rows);
}

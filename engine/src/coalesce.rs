//! Coalescing a micro-batch's small source batches: consecutive batches from the same source
//! partition are concatenated, up to a row bound, before any plan reads them, so `predict()`
//! and every other function run over large batches even when a source delivers one row per
//! poll. Rows keep their order (a row's index in the epoch's input is unchanged) and never
//! cross a partition boundary, so watermarks, late rows and dead letters see what they would
//! have seen without it. It adds no wait: it only joins rows the micro-batch already holds.

use std::sync::Arc;

use arrow::compute::{BatchCoalescer, concat_batches};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// The row bound when no model asks for more: DataFusion's default batch size.
pub const DEFAULT_ROWS: usize = 8192;

/// `batches` (each from the partition beside it in `partitions`; missing entries are
/// unknown) with every run of consecutive batches of one partition and schema concatenated,
/// while a run stays within `max_rows` rows. A batch of `max_rows` rows or more stays as it
/// is.
///
/// # Errors
/// Arrow failures concatenating.
pub fn coalesce(
    batches: Vec<RecordBatch>,
    partitions: Vec<Option<String>>,
    max_rows: usize,
) -> Result<(Vec<RecordBatch>, Vec<Option<String>>), ArrowError> {
    if batches.len() < 2 {
        return Ok((batches, partitions));
    }
    let tagged = partitions.len() >= batches.len();
    let mut partitions = partitions.into_iter();
    let mut out = Vec::new();
    let mut out_partitions = Vec::new();
    let mut run: Vec<RecordBatch> = Vec::new();
    let mut run_rows = 0;
    let mut run_tag: Option<String> = None;
    for batch in batches {
        let tag = partitions.next().flatten();
        let fits = run.first().is_some_and(|first| {
            run_tag == tag && run_rows + batch.num_rows() <= max_rows && same_schema(first, &batch)
        });
        if !fits && !run.is_empty() {
            out.push(concat_run(std::mem::take(&mut run))?);
            out_partitions.push(run_tag.take());
            run_rows = 0;
        }
        run_rows += batch.num_rows();
        run_tag = tag;
        run.push(batch);
    }
    if !run.is_empty() {
        out.push(concat_run(run)?);
        out_partitions.push(run_tag);
    }
    if !tagged {
        out_partitions.clear();
    }
    Ok((out, out_partitions))
}

/// Whether two batches have one schema (the same `Arc`, nearly always, or equal ones).
fn same_schema(a: &RecordBatch, b: &RecordBatch) -> bool {
    let (a, b) = (a.schema_ref(), b.schema_ref());
    Arc::ptr_eq(a, b) || a == b
}

/// One batch of a run's rows (at most `max_rows` of them), in order: Arrow's
/// `BatchCoalescer` copies each small batch into growing arrays, without `concat`'s
/// per-array checks.
fn concat_run(mut run: Vec<RecordBatch>) -> Result<RecordBatch, ArrowError> {
    if run.len() == 1 {
        return Ok(run.swap_remove(0));
    }
    let rows: usize = run.iter().map(RecordBatch::num_rows).sum();
    let schema = run[0].schema();
    if rows == 0 {
        return Ok(RecordBatch::new_empty(schema));
    }
    let mut coalescer = BatchCoalescer::new(Arc::clone(&schema), rows);
    for batch in run {
        coalescer.push_batch(batch)?;
    }
    coalescer.finish_buffered_batch()?;
    let mut done = Vec::with_capacity(1);
    while let Some(batch) = coalescer.next_completed_batch() {
        done.push(batch);
    }
    match done.len() {
        1 => Ok(done.swap_remove(0)),
        _ => concat_batches(&schema, &done),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{Array, Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::coalesce;

    fn batch(values: &[Option<f64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(values.to_vec()))]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<Option<f64>> {
        batches
            .iter()
            .flat_map(|b| {
                let x = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
                (0..x.len())
                    .map(|i| x.is_valid(i).then(|| x.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn one_row_batches_become_one_batch_in_order() {
        let input: Vec<RecordBatch> = [
            Some(1.0),
            None,
            Some(f64::NAN),
            Some(-0.0),
            Some(f64::INFINITY),
        ]
        .iter()
        .map(|v| batch(&[*v]))
        .collect();
        let expected = values(&input);
        let (out, partitions) = coalesce(input, vec![None; 5], 8192).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(partitions, [None]);
        let got = values(&out);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.map(f64::to_bits), e.map(f64::to_bits));
        }
    }

    #[test]
    fn runs_stop_at_partition_changes_and_the_row_bound() {
        let input = vec![
            batch(&[Some(1.0), Some(2.0)]),
            batch(&[Some(3.0)]),
            batch(&[Some(4.0)]),
            batch(&[Some(5.0), Some(6.0)]),
            batch(&[]),
            batch(&[Some(7.0)]),
        ];
        let tags = ["p0", "p0", "p1", "p1", "p1", "p1"]
            .iter()
            .map(|t| Some(t.to_string()))
            .collect();
        let (out, partitions) = coalesce(input, tags, 3).unwrap();
        let rows: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows, [3, 3, 1]);
        let tags: Vec<&str> = partitions.iter().map(|t| t.as_deref().unwrap()).collect();
        assert_eq!(tags, ["p0", "p1", "p1"]);
        assert_eq!(
            values(&out),
            (1..=7).map(|v| Some(f64::from(v))).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_large_batch_and_another_schema_stay_apart() {
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![9]))],
        )
        .unwrap();
        let big = batch(&[Some(1.0); 10]);
        let input = vec![batch(&[Some(0.5)]), big, other, batch(&[Some(2.0)])];
        let (out, partitions) = coalesce(input, Vec::new(), 10).unwrap();
        let rows: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows, [1, 10, 1, 1]);
        assert!(partitions.is_empty(), "unknown partitions stay unknown");
    }
}

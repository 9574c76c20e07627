//! Comparing a sink's streaming output with its batch output, per key.
//!
//! Floats match within a relative 1e-9 (summation order differs between modes); NaN equals NaN.
//! `FLOAT` (f32) values, which are what models return, match within 1e-6 (absolute below 1,
//! relative above): an inference backend picks its kernels by how many rows a call holds, and
//! a micro-batch holds fewer rows than the whole input, so a model's last bits differ.
//! This is a verification tool, not a hot path: rows are compared value by value.

use std::collections::BTreeMap;

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;

use crate::error::{EngineError, Result};

/// How the stream's rows combine into the sink's final contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Every row is final: a key emitted twice is a mismatch (windowed, stateless).
    Append,
    /// Later rows replace earlier rows with the same key (keyed aggregates: upserts).
    Upsert,
}

/// The comparison of one sink.
#[derive(Debug, Clone, Default)]
pub struct SinkComparison {
    /// The sink.
    pub sink: String,
    /// Key columns used (empty: whole rows compared as a multiset).
    pub key: Vec<String>,
    /// Distinct keys (or rows) in either output.
    pub total: usize,
    /// Those that match.
    pub matched: usize,
    /// Human-readable descriptions of the first differences.
    pub differences: Vec<String>,
}

impl SinkComparison {
    /// Fraction matched (1.0 for two empty outputs).
    pub fn match_rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.matched as f64 / self.total as f64
        }
    }
}

type Row = Vec<ScalarValue>;

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c.as_ref(), i))
                .collect::<datafusion::error::Result<Row>>()
                .map_err(|e| EngineError::Internal(format!("reading a row to compare: {e}")))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn values_equal(a: &ScalarValue, b: &ScalarValue) -> bool {
    if a.is_null() && b.is_null() {
        return true;
    }
    let float = |v: &ScalarValue| match v {
        ScalarValue::Float64(Some(x)) => Some((*x, 1e-9_f64)),
        ScalarValue::Float32(Some(x)) => Some((f64::from(*x), 1e-6)),
        _ => None,
    };
    match (float(a), float(b)) {
        (Some((x, _)), Some((y, _))) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        // Equal values, infinities included (whose difference is NaN).
        (Some((x, _)), Some((y, _))) if x == y => true,
        (Some((x, _)), Some((y, _))) if x.is_infinite() || y.is_infinite() => false,
        (Some((x, tx)), Some((y, ty))) if tx > 1e-9 || ty > 1e-9 => {
            (x - y).abs() <= tx.max(ty) * x.abs().max(y.abs()).max(1.0)
        }
        (Some((x, t)), Some((y, _))) => (x - y).abs() <= t * x.abs().max(y.abs()),
        _ => a == b,
    }
}

fn rows_equal(a: &Row, b: &Row) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_equal(x, y))
}

fn show(row: &Row) -> String {
    let parts: Vec<String> = row.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(", "))
}

/// Compares `batch` with the stream's epochs for one sink, by `key` column indexes.
///
/// # Errors
/// Rows that cannot be read.
pub fn compare_sink(
    sink: &str,
    column_names: &[String],
    key: &[usize],
    fold: Fold,
    batch: &[RecordBatch],
    stream_epochs: &[(u64, Vec<RecordBatch>)],
    max_differences: usize,
) -> Result<SinkComparison> {
    let batch_rows = rows_of(batch)?;
    let mut epochs: Vec<&(u64, Vec<RecordBatch>)> = stream_epochs.iter().collect();
    epochs.sort_by_key(|(e, _)| *e);
    let mut stream_rows = Vec::new();
    for (_, batches) in epochs {
        stream_rows.extend(rows_of(batches)?);
    }
    let mut out = SinkComparison {
        sink: sink.to_string(),
        key: key
            .iter()
            .map(|&i| column_names.get(i).cloned().unwrap_or_default())
            .collect(),
        ..SinkComparison::default()
    };
    let note = |out: &mut SinkComparison, text: String| {
        if out.differences.len() < max_differences {
            out.differences.push(text);
        }
    };
    if key.is_empty() && fold == Fold::Append {
        // Multiset comparison of whole rows, in a canonical order.
        let canon = |r: &Row| show(r);
        let mut b: Vec<(String, Row)> = batch_rows.into_iter().map(|r| (canon(&r), r)).collect();
        let mut s: Vec<(String, Row)> = stream_rows.into_iter().map(|r| (canon(&r), r)).collect();
        b.sort_by(|x, y| x.0.cmp(&y.0));
        s.sort_by(|x, y| x.0.cmp(&y.0));
        out.total = b.len().max(s.len());
        let (mut i, mut j) = (0, 0);
        while i < b.len() && j < s.len() {
            if rows_equal(&b[i].1, &s[j].1) {
                out.matched += 1;
                i += 1;
                j += 1;
            } else if b[i].0 < s[j].0 {
                note(&mut out, format!("batch only: {}", b[i].0));
                i += 1;
            } else {
                note(&mut out, format!("stream only: {}", s[j].0));
                j += 1;
            }
        }
        for (text, _) in b[i..].iter() {
            note(&mut out, format!("batch only: {text}"));
        }
        for (text, _) in s[j..].iter() {
            note(&mut out, format!("stream only: {text}"));
        }
        return Ok(out);
    }
    let key_of = |r: &Row| -> String { show(&key.iter().map(|&i| r[i].clone()).collect()) };
    let mut batch_by_key: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in batch_rows {
        batch_by_key.entry(key_of(&r)).or_default().push(r);
    }
    let mut stream_by_key: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in stream_rows {
        let entry = stream_by_key.entry(key_of(&r)).or_default();
        if fold == Fold::Upsert {
            entry.clear();
        }
        entry.push(r);
    }
    let mut keys: Vec<&String> = batch_by_key.keys().chain(stream_by_key.keys()).collect();
    keys.sort();
    keys.dedup();
    out.total = keys.len();
    for k in keys {
        let b = batch_by_key.get(k).map(Vec::as_slice).unwrap_or_default();
        let s = stream_by_key.get(k).map(Vec::as_slice).unwrap_or_default();
        let same = b.len() == s.len() && b.iter().zip(s).all(|(x, y)| rows_equal(x, y));
        if same {
            out.matched += 1;
        } else {
            let render = |rows: &[Row]| match rows {
                [] => "missing".to_string(),
                rows => rows.iter().map(show).collect::<Vec<_>>().join(" + "),
            };
            note(
                &mut out,
                format!("key {k}: batch {} vs stream {}", render(b), render(s)),
            );
        }
    }
    Ok(out)
}

/// Column index of each name.
///
/// # Errors
/// A key column the output does not have.
pub fn key_indexes(sink: &str, column_names: &[String], key: &[String]) -> Result<Vec<usize>> {
    key.iter()
        .map(|k| {
            column_names.iter().position(|c| c == k).ok_or_else(|| {
                EngineError::Usage(format!(
                    "sink '{sink}': merge_key column '{k}' is not an output column (columns: {})",
                    column_names.join(", ")
                ))
            })
        })
        .collect()
}

/// True when the array type holds floats (for documentation of tolerance in reports).
pub fn is_float(array: &dyn Array) -> bool {
    array.data_type().is_floating()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn model_outputs_match_within_their_precision_and_doubles_nearly_exactly() {
        let f32s = |x: f32| ScalarValue::Float32(Some(x));
        let f64s = |x: f64| ScalarValue::Float64(Some(x));
        assert!(values_equal(&f32s(0.133_143_42), &f32s(0.133_143_51)));
        assert!(values_equal(&f32s(0.000_095_546), &f32s(0.000_095_576)));
        assert!(!values_equal(&f32s(0.133_1), &f32s(0.133_2)));
        assert!(values_equal(&f32s(1000.0), &f32s(1000.0005)));
        assert!(!values_equal(&f32s(1000.0), &f32s(1000.01)));
        assert!(values_equal(&f64s(1.0), &f64s(1.0 + 1e-12)));
        assert!(!values_equal(&f64s(1.0), &f64s(1.0 + 1e-7)));
        assert!(values_equal(&f64s(f64::NAN), &f64s(f64::NAN)));
        assert!(!values_equal(&f32s(f32::NAN), &f32s(1.0)));
        for inf in [f32::INFINITY, f32::NEG_INFINITY] {
            assert!(values_equal(&f32s(inf), &f32s(inf)));
            assert!(values_equal(&f64s(f64::from(inf)), &f64s(f64::from(inf))));
            assert!(!values_equal(&f32s(inf), &f32s(-inf)));
            assert!(!values_equal(&f32s(inf), &f32s(f32::MAX)));
        }
    }

    fn rows(pairs: &[(i64, i64)]) -> RecordBatch {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("w", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                std::sync::Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.0))),
                std::sync::Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.1))),
            ],
        )
        .unwrap()
    }

    /// What a sink receives is compared, not a folded state: an append-only sink that got a
    /// row twice (a window emitted twice, a stateless row replayed) fails, keyed or not; an
    /// upserting sink keeps the last row per key, as a MERGE does.
    #[test]
    fn rows_an_append_only_sink_received_twice_are_a_mismatch() {
        let names = ["w".to_string(), "n".to_string()];
        let batch = [rows(&[(1, 10), (2, 20)])];
        let twice = [
            (1, vec![rows(&[(1, 10)])]),
            (2, vec![rows(&[(1, 10), (2, 20)])]),
        ];
        let once = [(1, vec![rows(&[(1, 10)])]), (2, vec![rows(&[(2, 20)])])];
        for key in [&[0][..], &[]] {
            let got = compare_sink("s", &names, key, Fold::Append, &batch, &twice, 5).unwrap();
            assert!(got.matched < got.total, "key {key:?}: {got:?}");
            let got = compare_sink("s", &names, key, Fold::Append, &batch, &once, 5).unwrap();
            assert_eq!((got.matched, got.total), (2, 2), "key {key:?}: {got:?}");
        }
        let updated = [
            (1, vec![rows(&[(1, 7)])]),
            (2, vec![rows(&[(1, 10), (2, 20)])]),
        ];
        let got = compare_sink("s", &names, &[0], Fold::Upsert, &batch, &updated, 5).unwrap();
        assert_eq!((got.matched, got.total), (2, 2), "{got:?}");
        let got = compare_sink("s", &names, &[0], Fold::Append, &batch, &updated, 5).unwrap();
        assert_eq!((got.matched, got.total), (1, 2), "{got:?}");
    }
}

//! How a text format's decoded rows become rows of the table: some columns are decoded as
//! another type and converted after, and a row whose value does not convert is rejected.
//!
//! ```text
//!   payloads ─▶ decoder (decode schema) ─▶ integer columns: whole numbers only (JSON, numbers)
//!                                      ─▶ TIMESTAMP columns: text or counted numbers (timestamps)
//!                                      ─▶ rows of the table's schema + rejected rows, with why
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::filter;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::isolate::{Rejected, RowFormat, decode_isolated};
use super::numbers::WholeNumbers;
use super::timestamps::{TimestampReading, TimestampUnit};

/// The columns a text format decodes as another type, and how they become the table's.
#[derive(Debug, Clone)]
pub(crate) struct ColumnReading {
    /// The schema the format's decoder fills.
    pub(crate) decode_schema: SchemaRef,
    /// The table's schema.
    schema: SchemaRef,
    whole: WholeNumbers,
    times: TimestampReading,
}

impl ColumnReading {
    /// For CSV: arrow-csv refuses fractions in integer columns and numbers in TIMESTAMP
    /// columns itself; with `unit`, TIMESTAMP columns are numbers of it.
    pub(crate) fn csv(schema: &SchemaRef, unit: Option<TimestampUnit>) -> Self {
        Self::new(
            schema,
            WholeNumbers::none(schema),
            TimestampReading::native_text(schema, unit),
        )
    }

    /// For JSON: integer columns take whole numbers only; TIMESTAMP columns take text, or
    /// numbers of `unit` when given.
    pub(crate) fn json(schema: &SchemaRef, unit: Option<TimestampUnit>) -> Self {
        Self::new(
            schema,
            WholeNumbers::of(schema),
            TimestampReading::typed_values(schema, unit),
        )
    }

    fn new(schema: &SchemaRef, whole: WholeNumbers, times: TimestampReading) -> Self {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(
                |(i, f)| match whole.decode_type(i).or_else(|| times.decode_type(i)) {
                    Some(t) => Field::new(f.name(), t, f.is_nullable()),
                    None => f.as_ref().clone(),
                },
            )
            .collect();
        let decode_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Self {
            decode_schema,
            schema: Arc::clone(schema),
            whole,
            times,
        }
    }

    /// A decoder's error, with advice where it is about a converted column.
    pub(crate) fn advise(&self, error: String) -> String {
        self.times.advise(self.whole.advise(error))
    }

    /// Turns a decoded batch (of `decode_schema`) into rows of the table's schema. Returns the
    /// rows and, for each row whose value does not convert, its index in `batch` and why.
    ///
    /// # Errors
    /// Arrow failures unrelated to the values.
    pub(crate) fn finish(
        &self,
        batch: RecordBatch,
    ) -> Result<(RecordBatch, Vec<(usize, String)>), ArrowError> {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut bad: Vec<Option<String>> = vec![None; rows];
        self.whole.convert(&mut columns, &mut bad)?;
        self.times.convert(&mut columns, &mut bad)?;
        let rejected: Vec<(usize, String)> = bad
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|e| (i, e)))
            .collect();
        if !rejected.is_empty() {
            // Rejected rows go before the batch is built: their converted value is null,
            // which a NOT NULL column cannot hold.
            let mut keep = vec![true; rows];
            for (row, _) in &rejected {
                keep[*row] = false;
            }
            let mask = BooleanArray::from(keep);
            columns = columns
                .iter()
                .map(|c| filter(c, &mask))
                .collect::<Result<_, _>>()?;
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows - rejected.len()));
        let out = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        Ok((out, rejected))
    }
}

/// [`decode_isolated`] with columns read as `reading` says: rejected payloads get advice, and
/// rows whose value does not convert are rejected too.
pub(crate) fn decode_read<F: RowFormat>(
    format: &F,
    reading: &ColumnReading,
    payloads: &[&[u8]],
) -> Result<(RecordBatch, Vec<Rejected>), ArrowError> {
    let (batch, mut rejected) = decode_isolated(format, payloads)?;
    for r in &mut rejected {
        r.error = reading.advise(std::mem::take(&mut r.error));
    }
    let (batch, bad) = reading.finish(batch)?;
    if !bad.is_empty() {
        // The batch holds one row per payload not rejected, in payload order.
        let mut skipped = rejected.iter().map(|r| r.index).peekable();
        let mut good = Vec::with_capacity(payloads.len());
        for i in 0..payloads.len() {
            if skipped.peek() == Some(&i) {
                skipped.next();
            } else {
                good.push(i);
            }
        }
        for (row, error) in bad {
            let index = good.get(row).copied().ok_or_else(|| {
                ArrowError::ComputeError(format!("decoded row {row} has no payload"))
            })?;
            rejected.push(Rejected { index, error });
        }
        rejected.sort_by_key(|r| r.index);
    }
    Ok((batch, rejected))
}

//! Decoding many payloads (one row each) into one Arrow batch with a vectorized decoder,
//! every payload that is not a valid row set aside: shared by the JSON and CSV formats.
//!
//! Decoders report syntax errors while decoding but type and missing-field errors only when
//! flushing, for a whole batch, and a decoder that failed is unusable. So payloads are fed to
//! one decoder with a per-payload check (exactly one complete record each); a payload that
//! fails is rejected and the good payloads fed since the last flush are fed again to a fresh
//! decoder (each good payload is re-fed at most once). When `flush` fails, that chunk is
//! decoded again by halves until the bad rows are single payloads: the slow path runs only for
//! chunks that hold a bad row.

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// A payload that could not be decoded: its index in the input and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the payload in the slice given to `decode`.
    pub index: usize,
    /// What was wrong with it.
    pub error: String,
}

/// Turns payloads (one row each) into batches of one schema, setting bad payloads aside.
pub trait PayloadDecoder: std::fmt::Debug + Send + Sync {
    /// The schema of the batches it makes.
    fn schema(&self) -> &SchemaRef;

    /// Decodes `payloads` in order: the good ones as one batch (input order kept), the bad
    /// ones as [`Rejected`] entries (ascending index).
    ///
    /// # Errors
    /// Only an Arrow failure unrelated to the payloads (building a decoder, concatenating).
    fn decode(&self, payloads: &[&[u8]]) -> Result<(RecordBatch, Vec<Rejected>), ArrowError>;
}

/// A row format with a vectorized, resumable decoder.
pub(crate) trait RowFormat {
    /// The format's decoder.
    type Decoder;

    /// The schema of the rows.
    fn row_schema(&self) -> &SchemaRef;

    /// A decoder that takes up to `rows` records before it needs a flush.
    fn fresh(&self, rows: usize) -> Result<Self::Decoder, ArrowError>;

    /// Feeds one payload, requiring that it adds exactly one complete record.
    fn feed(&self, decoder: &mut Self::Decoder, payload: &[u8]) -> Result<(), String>;

    /// The rows fed since the last flush.
    fn flush(decoder: &mut Self::Decoder) -> Result<Option<RecordBatch>, ArrowError>;
}

/// Decodes `payloads` with `format`, isolating bad payloads (see the module docs).
pub(crate) fn decode_isolated<F: RowFormat>(
    format: &F,
    payloads: &[&[u8]],
) -> Result<(RecordBatch, Vec<Rejected>), ArrowError> {
    let mut run = Run {
        format,
        payloads,
        capacity: payloads.len() + 1,
        batches: Vec::new(),
        rejected: Vec::new(),
    };
    let mut decoder = format.fresh(run.capacity)?;
    // Good payloads fed to `decoder` since it was created (their rows are not flushed yet).
    let mut pending: Vec<usize> = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        match format.feed(&mut decoder, payload) {
            Ok(()) => pending.push(index),
            Err(error) => {
                run.rejected.push(Rejected { index, error });
                // The decoder may hold part of the bad payload: start a fresh one with the
                // good payloads so far, and flush them so they are never fed again.
                decoder = format.fresh(run.capacity)?;
                run.refeed_and_flush(&mut decoder, &mut pending)?;
            }
        }
    }
    run.flush_pending(&mut decoder, &mut pending)?;
    run.rejected.sort_by_key(|r| r.index);
    let batch = concat_batches(format.row_schema(), &run.batches)?;
    Ok((batch, run.rejected))
}

struct Run<'a, F: RowFormat> {
    format: &'a F,
    payloads: &'a [&'a [u8]],
    capacity: usize,
    batches: Vec<RecordBatch>,
    rejected: Vec<Rejected>,
}

impl<F: RowFormat> Run<'_, F> {
    fn refeed_and_flush(
        &mut self,
        decoder: &mut F::Decoder,
        pending: &mut Vec<usize>,
    ) -> Result<(), ArrowError> {
        for &i in pending.iter() {
            // These payloads passed `feed` before; feeding them again cannot fail differently.
            if let Err(error) = self.format.feed(decoder, self.payloads[i]) {
                return Err(ArrowError::ParseError(format!(
                    "payload {i} decoded once but not twice: {error}"
                )));
            }
        }
        self.flush_pending(decoder, pending)
    }

    /// Flushes the pending rows; when the flush fails (a type or missing-field error somewhere
    /// in the chunk), finds the bad rows by halves ([`Run::bisect`]).
    fn flush_pending(
        &mut self,
        decoder: &mut F::Decoder,
        pending: &mut Vec<usize>,
    ) -> Result<(), ArrowError> {
        if pending.is_empty() {
            return Ok(());
        }
        match F::flush(decoder) {
            Ok(Some(batch)) => self.batches.push(batch),
            Ok(None) => {}
            Err(_) => {
                *decoder = self.format.fresh(self.capacity)?;
                self.bisect(pending)?;
            }
        }
        pending.clear();
        Ok(())
    }

    /// Decodes `chunk` (payloads that each hold one record, at least one of them not a valid
    /// row) by halves: a half that flushes cleanly is kept whole, a failing half is split
    /// again, and a failing single payload is rejected. One bad row among n costs about 2n
    /// payload decodes, not n decoders.
    fn bisect(&mut self, chunk: &[usize]) -> Result<(), ArrowError> {
        if let [index] = chunk {
            let mut single = self.format.fresh(1)?;
            let row = self
                .format
                .feed(&mut single, self.payloads[*index])
                .map_err(ArrowError::ParseError)
                .and_then(|()| F::flush(&mut single));
            match row {
                Ok(Some(batch)) => self.batches.push(batch),
                Ok(None) => {}
                Err(e) => self.rejected.push(Rejected {
                    index: *index,
                    error: e.to_string(),
                }),
            }
            return Ok(());
        }
        let (left, right) = chunk.split_at(chunk.len() / 2);
        for half in [left, right] {
            if half.is_empty() {
                continue;
            }
            let mut decoder = self.format.fresh(half.len())?;
            let fed = half
                .iter()
                .all(|&i| self.format.feed(&mut decoder, self.payloads[i]).is_ok());
            match fed.then(|| F::flush(&mut decoder)) {
                Some(Ok(Some(batch))) => self.batches.push(batch),
                Some(Ok(None)) => {}
                _ => self.bisect(half)?,
            }
        }
        Ok(())
    }
}

//! Running a model over a batch without letting some rows sink the rest: rows with a NULL
//! input are set aside by the model's null policy, a failing call is retried once, and a call
//! that fails again is bisected until only the rows that fail on their own are left out.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array, new_empty_array};
use arrow::buffer::NullBuffer;
use arrow::compute::{concat, filter, take};
use arrow::datatypes::DataType;

use super::ModelError;

/// What a row with a NULL input gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NullPolicy {
    /// NULL, and the row goes to dead letters.
    #[default]
    DeadLetter,
    /// NULL, quietly.
    Null,
    /// The pipeline stops with an error.
    Fail,
}

impl NullPolicy {
    /// The policy's option value.
    pub fn name(self) -> &'static str {
        match self {
            NullPolicy::DeadLetter => "dead_letter",
            NullPolicy::Null => "null",
            NullPolicy::Fail => "fail",
        }
    }

    /// The policy named `name` (an option value).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "dead_letter" => Some(NullPolicy::DeadLetter),
            "null" => Some(NullPolicy::Null),
            "fail" => Some(NullPolicy::Fail),
            _ => None,
        }
    }
}

/// Rows left out of a call, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// Row indices in the batch, ascending.
    pub rows: Vec<u32>,
    /// Why (the model's error, or the NULL input).
    pub reason: String,
}

/// A batch's predictions: one value per row, NULL where the row was left out.
#[derive(Debug)]
pub struct Scored {
    /// The outputs, as long as the batch.
    pub values: ArrayRef,
    /// Rows to send to dead letters, grouped by reason.
    pub dead_letters: Vec<LeftOut>,
}

/// Runs `run` (a model call) over `columns` by `policy`, isolating failing rows.
///
/// `run` must return one value per input row of type `out_type`. Only [`ModelError::Run`] is
/// isolated; a [`ModelError::Timeout`] leaves the call's rows out at once (no retry: the model
/// is slow, not wrong about some row); any other error (a signature that does not fit, a
/// backend that cannot start) is returned as it is.
///
/// # Errors
/// A NULL input under [`NullPolicy::Fail`], errors `run` gives that are not run failures, and
/// Arrow kernel failures (a bug).
pub fn score_isolating(
    model: &str,
    policy: NullPolicy,
    columns: &[ArrayRef],
    out_type: &DataType,
    run: &dyn Fn(&[ArrayRef]) -> Result<ArrayRef, ModelError>,
) -> Result<Scored, ModelError> {
    let rows = columns.first().map_or(0, |c| c.len());
    let arrow = |e: arrow::error::ArrowError| ModelError::Run {
        model: model.to_string(),
        rows,
        message: format!("arranging rows: {e}"),
    };
    let nulls = columns
        .iter()
        .fold(None, |acc: Option<NullBuffer>, c| {
            NullBuffer::union(acc.as_ref(), c.logical_nulls().as_ref())
        })
        .filter(|n| n.null_count() > 0);
    let mut dead_letters = Vec::new();
    let valid: Vec<ArrayRef> = match &nulls {
        None => columns.to_vec(),
        Some(nulls) => {
            let null_rows: Vec<u32> = (0..rows)
                .filter(|&i| nulls.is_null(i))
                .map(|i| i as u32)
                .collect();
            match policy {
                NullPolicy::Fail => {
                    return Err(ModelError::NullInput {
                        model: model.to_string(),
                        rows: null_rows.len(),
                        first: null_rows.first().copied().unwrap_or(0) as usize,
                    });
                }
                NullPolicy::DeadLetter => dead_letters.push(LeftOut {
                    rows: null_rows,
                    reason: format!(
                        "model '{model}': a NULL input (null_policy 'dead_letter'; the row's prediction is NULL)"
                    ),
                }),
                NullPolicy::Null => {}
            }
            let keep = BooleanArray::new(nulls.inner().clone(), None);
            columns
                .iter()
                .map(|c| filter(c, &keep))
                .collect::<Result<_, _>>()
                .map_err(arrow)?
        }
    };
    // Fast path: every row ran in one go.
    let pieces = match run(&valid) {
        Ok(values) if nulls.is_none() => {
            return Ok(Scored {
                values,
                dead_letters,
            });
        }
        Ok(values) => vec![Piece::Scored(0, values)],
        Err(e @ ModelError::Timeout { .. }) => vec![Piece::LeftOut(0, valid_len(&valid), e)],
        Err(ModelError::Run { .. }) => {
            // Retried once as a whole, then bisected.
            match run(&valid) {
                Ok(values) => vec![Piece::Scored(0, values)],
                Err(e @ ModelError::Timeout { .. }) => {
                    vec![Piece::LeftOut(0, valid_len(&valid), e)]
                }
                Err(ModelError::Run { message, .. }) => {
                    let mut pieces = Vec::new();
                    bisect(&valid, 0, message, run, &mut pieces)?;
                    pieces
                }
                Err(other) => return Err(other),
            }
        }
        Err(other) => return Err(other),
    };
    // Where each valid row's value is in the concatenated scored pieces (None: it failed).
    let valid_rows = valid.first().map_or(0, |c| c.len());
    let mut position: Vec<Option<u32>> = vec![None; valid_rows];
    let mut parts: Vec<ArrayRef> = Vec::new();
    let mut next = 0u32;
    let mut failures: Vec<(u32, String)> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Scored(start, values) => {
                let Some(slots) = position.get_mut(start..start + values.len()) else {
                    return Err(ModelError::Run {
                        model: model.to_string(),
                        rows,
                        message: format!(
                            "a call returned {} values for rows from {start} of {valid_rows}",
                            values.len()
                        ),
                    });
                };
                for (slot, p) in slots.iter_mut().zip(next..) {
                    *slot = Some(p);
                }
                next += values.len() as u32;
                parts.push(values);
            }
            Piece::Failed(row, message) => failures.push((
                row as u32,
                format!("model '{model}' failed on this row: {message}"),
            )),
            Piece::LeftOut(start, len, error) => {
                let reason = error.to_string();
                failures.extend((start..start + len).map(|r| (r as u32, reason.clone())));
            }
        }
    }
    let valid_to_batch: Vec<u32> = match &nulls {
        None => (0..rows as u32).collect(),
        Some(nulls) => (0..rows as u32)
            .filter(|&i| nulls.is_valid(i as usize))
            .collect(),
    };
    let mut by_reason: Vec<LeftOut> = Vec::new();
    for (row, reason) in failures {
        let row = valid_to_batch[row as usize];
        match by_reason.iter_mut().find(|l| l.reason == reason) {
            Some(l) => l.rows.push(row),
            None => by_reason.push(LeftOut {
                rows: vec![row],
                reason,
            }),
        }
    }
    dead_letters.extend(by_reason);
    let mut indices: Vec<Option<u32>> = vec![None; rows];
    for (valid_row, batch_row) in valid_to_batch.iter().enumerate() {
        indices[*batch_row as usize] = position[valid_row];
    }
    let scored = match parts.as_slice() {
        [] => new_empty_array(out_type),
        [one] => Arc::clone(one),
        _ => concat(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>()).map_err(arrow)?,
    };
    let values = take(&scored, &UInt32Array::from(indices), None).map_err(arrow)?;
    Ok(Scored {
        values,
        dead_letters,
    })
}

/// A run of rows that scored, or one row that failed on its own.
enum Piece {
    /// Values of the rows from `start` on.
    Scored(usize, ArrayRef),
    /// A row and its error.
    Failed(usize, String),
    /// Rows from `start` on, left out for the error (a timeout).
    LeftOut(usize, usize, ModelError),
}

fn valid_len(columns: &[ArrayRef]) -> usize {
    columns.first().map_or(0, |c| c.len())
}

/// Runs each half of a range that failed as a whole (`error`: its failure), down to single
/// rows: a single row that fails is left out with its own error.
fn bisect(
    columns: &[ArrayRef],
    offset: usize,
    error: String,
    run: &dyn Fn(&[ArrayRef]) -> Result<ArrayRef, ModelError>,
    out: &mut Vec<Piece>,
) -> Result<(), ModelError> {
    let rows = columns.first().map_or(0, |c| c.len());
    if rows <= 1 {
        out.push(Piece::Failed(offset, error));
        return Ok(());
    }
    let half = rows / 2;
    for (start, len) in [(0, half), (half, rows - half)] {
        let part: Vec<ArrayRef> = columns.iter().map(|c| c.slice(start, len)).collect();
        match run(&part) {
            Ok(values) => out.push(Piece::Scored(offset + start, values)),
            Err(e @ ModelError::Timeout { .. }) => out.push(Piece::LeftOut(offset + start, len, e)),
            Err(ModelError::Run { message, .. }) => {
                bisect(&part, offset + start, message, run, out)?
            }
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

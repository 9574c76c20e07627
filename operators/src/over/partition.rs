//! One partition's state: the final rows a frame, LAG or LEAD can still read, the rows not yet
//! emitted (waiting for LEAD's later rows), and the small carry of what was dropped (row
//! count, last rank, the first rows for FIRST_VALUE/NTH_VALUE, running accumulators).

use std::ops::Range;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::logical_expr::Accumulator;

use super::function::{Function, Kind, Start};

/// A function's state in one partition.
#[derive(Debug)]
pub(crate) struct FnState {
    /// An aggregate's accumulator, holding the rows of frame `last`.
    pub acc: Option<Box<dyn Accumulator>>,
    /// The frame of the last row computed, as indices into the held rows.
    pub last: Range<usize>,
}

/// One partition of an OVER node.
#[derive(Debug)]
pub(crate) struct Partition {
    /// Held final rows, in order (ORDER BY value, then the tie columns), as the functions read
    /// them: the event time and each function's arguments (`OverPlan::values`); rows before
    /// `emitted` have been emitted.
    pub rows: RecordBatch,
    /// The same rows whole, when rows wait for LEAD (their output needs every column).
    pub full: Option<RecordBatch>,
    /// How many of `rows` have been emitted.
    pub emitted: usize,
    /// Rows of the partition dropped from the front of `rows` so far.
    pub pruned: u64,
    /// The partition's first rows, for FIRST_VALUE/NTH_VALUE from UNBOUNDED PRECEDING.
    pub head: Option<RecordBatch>,
    /// Each function's state.
    pub states: Vec<FnState>,
    /// The ORDER BY value of the last row ranked (`Some(None)`: NULL; `None`: none yet).
    pub last_ts: Option<Option<i64>>,
    /// The last row's RANK and DENSE_RANK.
    pub rank: u64,
    /// See `rank`.
    pub dense: u64,
    /// The ranks computed this round, moved into `rank`/`dense` once every function ran.
    pub pending_rank: Option<(u64, u64)>,
    /// The greatest event time of the partition's rows (its unit).
    pub max_ts: Option<i64>,
}

impl Partition {
    /// A partition of its first final `rows` (in order; `full`: whole, when kept), keeping the
    /// first `head` apart.
    pub fn new(
        (rows, full): (RecordBatch, Option<RecordBatch>),
        functions: &[Function],
        head: usize,
        max_ts: Option<i64>,
    ) -> Result<Self> {
        let states = functions
            .iter()
            .map(|f| {
                Ok(FnState {
                    acc: accumulator(&f.kind)?,
                    last: 0..0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = (head > 0).then(|| rows.slice(0, head.min(rows.num_rows())));
        Ok(Self {
            rows,
            full,
            emitted: 0,
            pruned: 0,
            head,
            states,
            last_ts: None,
            rank: 0,
            dense: 0,
            pending_rank: None,
            max_ts,
        })
    }

    /// Appends final rows (after every held row in order), keeping the first `head` rows of
    /// the partition apart.
    pub fn append(
        &mut self,
        (rows, full): (&RecordBatch, Option<&RecordBatch>),
        head: usize,
        max_ts: Option<i64>,
    ) -> Result<()> {
        if head > 0 {
            let have = self.head.as_ref().map_or(0, RecordBatch::num_rows);
            if have < head {
                let more = rows.slice(0, (head - have).min(rows.num_rows()));
                self.head = Some(match &self.head {
                    Some(h) => concat_batches(&rows.schema(), [h, &more])?,
                    None => more,
                });
            }
        }
        self.rows = if self.rows.num_rows() == 0 {
            rows.clone()
        } else {
            concat_batches(&rows.schema(), [&self.rows, rows])?
        };
        if let Some(full) = full {
            self.full = Some(match &self.full {
                Some(held) if held.num_rows() > 0 => {
                    concat_batches(&full.schema(), [held, full])?
                }
                _ => full.clone(),
            });
        }
        if let Some(ts) = max_ts {
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        }
        Ok(())
    }

    /// Rows not yet emitted.
    pub fn waiting(&self) -> usize {
        self.rows.num_rows() - self.emitted
    }

    /// Drops the held rows no function can read again (before the earliest frame start, LAG
    /// offset or unemitted row).
    pub fn prune(&mut self, functions: &[Function]) {
        let mut keep = self.emitted;
        for (f, state) in functions.iter().zip(&self.states) {
            let from = match &f.kind {
                Kind::Aggregate { sliding: true, .. } => state.last.start,
                Kind::Aggregate { sliding: false, .. } => state.last.end,
                Kind::Nth { .. } if f.start == Start::Unbounded => {
                    state.last.end.saturating_sub(1)
                }
                Kind::Nth { .. } => state.last.start,
                Kind::Shift { offset, .. } if *offset > 0 => {
                    self.emitted.saturating_sub(offset.unsigned_abs() as usize)
                }
                _ => self.emitted,
            };
            keep = keep.min(from);
        }
        if keep == 0 {
            return;
        }
        self.rows = self.rows.slice(keep, self.rows.num_rows() - keep);
        if let Some(full) = &self.full {
            self.full = Some(full.slice(keep, full.num_rows() - keep));
        }
        self.emitted -= keep;
        self.pruned += keep as u64;
        for state in &mut self.states {
            state.last = state.last.start.saturating_sub(keep)..state.last.end.saturating_sub(keep);
        }
    }

    /// Whether nothing of the partition can matter to a later row: every row emitted, and
    /// every function's frame starts after the partition's last row for any row at or after
    /// `mark` (so it carries nothing, and its frames are past). Times in units of `per`
    /// nanoseconds.
    pub fn forgettable(&self, functions: &[Function], mark: i64, per: i64) -> bool {
        self.waiting() == 0
            && functions.iter().all(|f| match (f.uses_frame(), f.start) {
                (true, Start::Rows(0)) => true,
                (true, Start::Range(back)) => self
                    .max_ts
                    .is_some_and(|ts| ts.saturating_add(back / per + 1) < mark),
                _ => false,
            })
    }
}

/// A fresh accumulator for `kind` (None for functions that hold none).
pub(crate) fn accumulator(kind: &Kind) -> Result<Option<Box<dyn Accumulator>>> {
    match kind {
        Kind::Aggregate { agg, sliding: true } => agg.create_sliding_accumulator().map(Some),
        Kind::Aggregate {
            agg,
            sliding: false,
        } => agg.create_accumulator().map(Some),
        _ => Ok(None),
    }
}

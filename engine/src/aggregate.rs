//! The stateful half of a streaming aggregate: keyed window state merged with DataFusion's own
//! accumulators, in phases.
//!
//! Each epoch's `Partial` state rows are appended to their window's state list. A window's list
//! is compacted with `PartialReduce` only when it has grown past twice its last compacted size,
//! so merging costs O(rows in the epoch), amortised, not O(open state). When the watermark
//! passes a window's end, `Final` turns its state rows into the aggregate's values.
//! A keyed aggregate (no window) keeps one state and emits, each epoch, the final values of the
//! groups the epoch touched (upserts).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::{ExecutionPlan, collect};
use volley_sql::stream::AggregatePlan;

use crate::error::{EngineError, Result};

/// Compact a window's state once it holds more than `2 × compacted + SLACK` rows.
const COMPACT_SLACK: usize = 16_384;

/// State rows of one window (or of the whole keyed aggregate).
#[derive(Debug, Default)]
struct StateList {
    batches: Vec<RecordBatch>,
    rows: usize,
    compacted_rows: usize,
}

/// What an epoch of an aggregate produced.
#[derive(Debug, Default)]
pub struct AggregateOutput {
    /// Final aggregate rows (window emissions or keyed upserts), before the post segment.
    pub rows: Vec<RecordBatch>,
    /// Windows emitted this epoch.
    pub windows_emitted: usize,
}

/// Keyed window state for one INSERT's aggregate.
#[derive(Debug)]
pub struct AggregateState {
    plan: AggregatePlan,
    /// Window start (in the window column's unit; `None` for a NULL event time) → state.
    /// A keyed aggregate uses the single key `Some(i64::MIN)`.
    windows: BTreeMap<Option<i64>, StateList>,
    /// Windows whose end is at or below this have been emitted (window column's unit).
    emitted_upto: Option<i64>,
    task_ctx: Arc<TaskContext>,
}

const KEYED: Option<i64> = Some(i64::MIN);

impl AggregateState {
    /// Empty state for `plan`.
    pub fn new(plan: AggregatePlan, task_ctx: Arc<TaskContext>) -> Self {
        Self {
            plan,
            windows: BTreeMap::new(),
            emitted_upto: None,
            task_ctx,
        }
    }

    /// The plan this state belongs to.
    pub fn plan(&self) -> &AggregatePlan {
        &self.plan
    }

    /// Windows (or, keyed, 1) currently holding state.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Runs the partial aggregate over this epoch's input (already in the source slots) and
    /// merges it into state. Returns upserts for a keyed aggregate; nothing for a windowed one
    /// (windows are emitted by [`AggregateState::advance_watermark`]).
    ///
    /// # Errors
    /// Failures executing DataFusion's aggregate.
    pub async fn process_epoch(&mut self) -> Result<AggregateOutput> {
        let partials = collect(Arc::clone(&self.plan.partial), Arc::clone(&self.task_ctx))
            .await
            .map_err(EngineError::exec("the partial aggregate"))?;
        let partials: Vec<RecordBatch> =
            partials.into_iter().filter(|b| b.num_rows() > 0).collect();
        if partials.is_empty() {
            return Ok(AggregateOutput::default());
        }
        match self.plan.window.as_ref().map(|w| w.group_index) {
            Some(index) => {
                for batch in &partials {
                    for (start, rows) in split_by_window(batch, index)? {
                        self.append(start, rows).await?;
                    }
                }
                Ok(AggregateOutput::default())
            }
            None => self.keyed_upserts(partials).await,
        }
    }

    /// Emits every window whose end is at or below `watermark` (window column's unit), in
    /// window order, and marks later rows for those windows as late.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    pub async fn advance_watermark(&mut self, watermark: i64) -> Result<AggregateOutput> {
        let Some(window) = &self.plan.window else {
            return Ok(AggregateOutput::default());
        };
        let width = window.width;
        if self.emitted_upto.is_some_and(|done| watermark <= done) {
            return Ok(AggregateOutput::default());
        }
        self.emitted_upto = Some(watermark);
        window.gate.set_cutoff(watermark.saturating_sub(width));
        let due: Vec<Option<i64>> = self
            .windows
            .keys()
            .copied()
            .filter(|start| start.is_some_and(|s| s.saturating_add(width) <= watermark))
            .collect();
        let mut out = AggregateOutput::default();
        for start in due {
            if let Some(state) = self.windows.remove(&start) {
                out.rows.extend(self.finalize(state.batches).await?);
                out.windows_emitted += 1;
            }
        }
        Ok(out)
    }

    /// End of input: emits every open window, including the NULL-time one.
    ///
    /// # Errors
    /// Failures executing DataFusion's final aggregate.
    pub async fn flush(&mut self) -> Result<AggregateOutput> {
        if self.plan.window.is_none() {
            return Ok(AggregateOutput::default());
        }
        let mut out = self.advance_watermark(i64::MAX).await?;
        let rest = std::mem::take(&mut self.windows);
        for (_, state) in rest {
            out.rows.extend(self.finalize(state.batches).await?);
            out.windows_emitted += 1;
        }
        Ok(out)
    }

    async fn append(&mut self, start: Option<i64>, rows: RecordBatch) -> Result<()> {
        let state = self.windows.entry(start).or_default();
        state.rows += rows.num_rows();
        state.batches.push(rows);
        if state.rows > 2 * state.compacted_rows + COMPACT_SLACK {
            let batches = std::mem::take(&mut state.batches);
            let compacted = self.reduce(batches).await?;
            let state = self.windows.entry(start).or_default();
            state.rows = compacted.iter().map(RecordBatch::num_rows).sum();
            state.compacted_rows = state.rows;
            state.batches = compacted;
        }
        Ok(())
    }

    /// Keyed aggregate: merge the epoch into the single state, then finalise the touched groups.
    async fn keyed_upserts(&mut self, partials: Vec<RecordBatch>) -> Result<AggregateOutput> {
        let mut all = self
            .windows
            .remove(&KEYED)
            .map(|s| s.batches)
            .unwrap_or_default();
        all.extend(partials.iter().cloned());
        let compacted = self.reduce(all).await?;
        let touched = if self.plan.group_count == 0 {
            compacted.clone()
        } else {
            let keys = touched_keys(&partials, self.plan.group_count)?;
            keys.filter(&compacted)?
        };
        let rows = compacted.iter().map(RecordBatch::num_rows).sum();
        self.windows.insert(
            KEYED,
            StateList {
                batches: compacted,
                rows,
                compacted_rows: rows,
            },
        );
        Ok(AggregateOutput {
            rows: self.finalize(touched).await?,
            windows_emitted: 0,
        })
    }

    /// State rows in, one state row per group out.
    async fn reduce(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        self.run_phase(
            AggregateMode::PartialReduce,
            batches,
            "merging aggregate state",
        )
        .await
    }

    /// State rows in, final aggregate rows (with the original aggregate's schema) out.
    async fn finalize(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let out = self
            .run_phase(AggregateMode::Final, batches, "finalising aggregates")
            .await?;
        out.into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                RecordBatch::try_new(Arc::clone(&self.plan.output_schema), b.columns().to_vec())
                    .map_err(|e| {
                        EngineError::Internal(format!(
                            "final aggregate rows do not fit the aggregate's schema: {e}"
                        ))
                    })
            })
            .collect()
    }

    async fn run_phase(
        &self,
        mode: AggregateMode,
        batches: Vec<RecordBatch>,
        what: &str,
    ) -> Result<Vec<RecordBatch>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let input =
            MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&self.plan.state_schema), None)
                .map_err(EngineError::exec(what))?;
        let exec = AggregateExec::try_new(
            mode,
            self.plan.final_group_by.clone(),
            self.plan.aggr_expr.clone(),
            self.plan.filter_expr.clone(),
            input,
            Arc::clone(&self.plan.input_schema),
        )
        .map_err(EngineError::exec(what))?;
        let exec: Arc<dyn ExecutionPlan> = Arc::new(exec);
        collect(exec, Arc::clone(&self.task_ctx))
            .await
            .map_err(EngineError::exec(what))
    }

    /// Number of state rows held (for metrics).
    pub fn state_rows(&self) -> usize {
        self.windows.values().map(|s| s.rows).sum()
    }
}

/// Splits state rows by the window-start group column.
fn split_by_window(batch: &RecordBatch, index: usize) -> Result<Vec<(Option<i64>, RecordBatch)>> {
    let column = cast(batch.column(index), &DataType::Int64)?;
    let starts = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| EngineError::Internal("window start column is not a timestamp".into()))?;
    let mut distinct: Vec<Option<i64>> = Vec::new();
    let mut last: Option<Option<i64>> = None;
    for value in starts.iter() {
        if last != Some(value) {
            last = Some(value);
            if !distinct.contains(&value) {
                distinct.push(value);
            }
        }
    }
    if distinct.len() == 1 {
        return Ok(vec![(distinct[0], batch.clone())]);
    }
    let mut out = Vec::with_capacity(distinct.len());
    for start in distinct {
        let mask: BooleanArray = match start {
            Some(s) => eq(starts, &Int64Array::new_scalar(s))?,
            None => arrow::compute::is_null(starts)?,
        };
        out.push((start, filter_record_batch(batch, &mask)?));
    }
    Ok(out)
}

/// The group keys an epoch touched, to pick their rows out of the merged state.
struct TouchedKeys {
    converter: RowConverter,
    keys: HashSet<Box<[u8]>>,
    group_count: usize,
}

fn touched_keys(partials: &[RecordBatch], group_count: usize) -> Result<TouchedKeys> {
    let fields = partials
        .first()
        .map(|b| {
            b.schema().fields()[..group_count]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()
        })
        .unwrap_or_default();
    let converter = RowConverter::new(fields)?;
    let mut keys = HashSet::new();
    for batch in partials {
        let rows = converter.convert_columns(&batch.columns()[..group_count])?;
        keys.extend(rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())));
    }
    Ok(TouchedKeys {
        converter,
        keys,
        group_count,
    })
}

impl TouchedKeys {
    fn filter(&self, state: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::with_capacity(state.len());
        for batch in state {
            let rows = self
                .converter
                .convert_columns(&batch.columns()[..self.group_count])?;
            let mask: BooleanArray = rows
                .iter()
                .map(|r| Some(self.keys.contains(r.as_ref())))
                .collect();
            let picked = filter_record_batch(batch, &mask)?;
            if picked.num_rows() > 0 {
                out.push(picked);
            }
        }
        Ok(out)
    }
}

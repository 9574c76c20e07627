//! One shard of grouped state: the groups whose keys hash to it, per window, and the
//! DataFusion phases (PartialReduce, Final) that merge and finalise them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::TwoPhase;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::expiry::Expiry;
use super::split::{TouchedKeys, split_by_window};
use super::table::{GroupTable, TableLayout};
use volley_sql::stream::operator::{OperatorError, Result};

/// Compact a window's state once it holds more than `2 × compacted + SLACK` rows.
const COMPACT_SLACK: usize = 16_384;

/// The window key a keyed (non-windowed) aggregate keeps its single state under.
const KEYED: Option<i64> = Some(i64::MIN);

/// What the merge and final phases need, shared by every shard's task.
#[derive(Debug)]
pub(super) struct Phases {
    final_group_by: PhysicalGroupBy,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    input_schema: SchemaRef,
    state_schema: SchemaRef,
    output_schema: SchemaRef,
    pub(super) group_count: usize,
    /// Index of the window-start group column (None: keyed aggregate).
    pub(super) window_index: Option<usize>,
    /// Keyed aggregates: groups not updated for this many nanoseconds of event time are
    /// forgotten.
    pub(super) ttl_nanos: Option<i64>,
    /// Windowed aggregates without grouping sets: each window's groups live in a
    /// [`GroupTable`] (None: windows keep lists of state rows, compacted as they double).
    layout: Option<TableLayout>,
    task_ctx: Arc<TaskContext>,
}

impl Phases {
    pub(super) fn new(
        plan: &TwoPhase,
        window_index: Option<usize>,
        state_ttl: Option<std::time::Duration>,
        task_ctx: Arc<TaskContext>,
    ) -> Self {
        let layout = (window_index.is_some() && plan.final_group_by.is_single())
            .then(|| {
                TableLayout::new(
                    &plan.aggr_expr,
                    plan.group_count,
                    &plan.state_schema,
                    &plan.output_schema,
                )
                .ok()
            })
            .flatten();
        Self {
            final_group_by: plan.final_group_by.clone(),
            aggr_expr: plan.aggr_expr.clone(),
            filter_expr: plan.filter_expr.clone(),
            input_schema: Arc::clone(&plan.input_schema),
            state_schema: Arc::clone(&plan.state_schema),
            output_schema: Arc::clone(&plan.output_schema),
            group_count: plan.group_count,
            window_index,
            ttl_nanos: state_ttl.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            layout,
            task_ctx,
        }
    }

    /// Windows keep lists of state rows rather than group tables.
    pub(super) fn without_tables(&mut self) {
        self.layout = None;
    }

    /// State rows in, one state row per group out.
    async fn reduce(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        self.run(
            AggregateMode::PartialReduce,
            batches,
            "merging aggregate state",
        )
        .await
    }

    /// State rows in, final aggregate rows (with the original aggregate's schema) out.
    pub(super) async fn finalize(&self, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let out = self
            .run(AggregateMode::Final, batches, "finalising aggregates")
            .await?;
        out.into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                RecordBatch::try_new(Arc::clone(&self.output_schema), b.columns().to_vec()).map_err(
                    |e| {
                        OperatorError::Internal(format!(
                            "final aggregate rows do not fit the aggregate's schema: {e}"
                        ))
                    },
                )
            })
            .collect()
    }

    async fn run(
        &self,
        mode: AggregateMode,
        batches: Vec<RecordBatch>,
        what: &str,
    ) -> Result<Vec<RecordBatch>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let input =
            MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&self.state_schema), None)
                .map_err(OperatorError::exec(what))?;
        let exec = AggregateExec::try_new(
            mode,
            self.final_group_by.clone(),
            self.aggr_expr.clone(),
            self.filter_expr.clone(),
            input,
            Arc::clone(&self.input_schema),
        )
        .map_err(OperatorError::exec(what))?;
        let exec: Arc<dyn ExecutionPlan> = Arc::new(exec);
        collect(exec, Arc::clone(&self.task_ctx))
            .await
            .map_err(OperatorError::exec(what))
    }
}

/// State rows of one window (or of the whole keyed aggregate): a list of state batches, or
/// a [`GroupTable`].
#[derive(Debug, Default)]
pub(super) struct StateList {
    batches: Vec<RecordBatch>,
    table: Option<GroupTable>,
    pub(super) rows: usize,
    compacted_rows: usize,
}

impl StateList {
    /// The state rows.
    ///
    /// # Errors
    /// DataFusion failures reading a group table.
    pub(super) fn batches(&self, phases: &Phases) -> Result<Vec<RecordBatch>> {
        let mut out = self.batches.clone();
        if let (Some(table), Some(layout)) = (&self.table, &phases.layout) {
            out.extend(table.state(layout)?);
        }
        Ok(out)
    }

    /// Bytes of memory the list's rows and group table hold.
    pub(super) fn size(&self) -> usize {
        let rows: usize = self
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        rows + self.table.as_ref().map_or(0, GroupTable::size)
    }

    /// The final rows of every group, consuming the state.
    async fn finish(self, phases: &Phases) -> Result<Vec<RecordBatch>> {
        let mut out = phases.finalize(self.batches).await?;
        if let (Some(table), Some(layout)) = (self.table, &phases.layout) {
            let rows = table.finish(layout)?;
            if rows.num_rows() > 0 {
                out.push(rows);
            }
        }
        Ok(out)
    }
}

/// The state of the groups that hash to one shard: window start → state rows.
#[derive(Debug, Default)]
pub(super) struct Shard {
    pub(super) windows: BTreeMap<Option<i64>, StateList>,
    /// Keyed aggregates with `state_ttl`: when each group was last updated.
    pub(super) expiry: Option<Expiry>,
}

impl Shard {
    /// Windowed: appends this epoch's state rows to their windows, compacting a window's list
    /// once it has doubled (so merging is O(rows in the epoch), amortised). Returns the window
    /// starts it touched.
    pub(super) async fn merge(
        &mut self,
        phases: &Phases,
        partials: Vec<RecordBatch>,
    ) -> Result<Vec<Option<i64>>> {
        let Some(index) = phases.window_index else {
            return Err(OperatorError::Internal(
                "windowed merge on a keyed aggregate".into(),
            ));
        };
        let mut touched = Vec::new();
        for batch in &partials {
            for (start, rows) in split_by_window(batch, index)? {
                touched.push(start);
                let state = self.windows.entry(start).or_default();
                if let Some(layout) = &phases.layout {
                    let table = match &mut state.table {
                        Some(table) => table,
                        empty => empty.insert(GroupTable::new(layout)?),
                    };
                    table.merge(layout, &rows)?;
                    state.rows = table.len();
                    continue;
                }
                state.rows += rows.num_rows();
                state.batches.push(rows);
                if state.rows > 2 * state.compacted_rows + COMPACT_SLACK {
                    let compacted = phases.reduce(std::mem::take(&mut state.batches)).await?;
                    state.rows = compacted.iter().map(RecordBatch::num_rows).sum();
                    state.compacted_rows = state.rows;
                    state.batches = compacted;
                }
            }
        }
        Ok(touched)
    }

    /// Keyed: merges the epoch into the single state and returns the final values of the
    /// groups the epoch touched.
    pub(super) async fn upsert(
        &mut self,
        phases: &Phases,
        partials: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut all = self
            .windows
            .remove(&KEYED)
            .map(|s| s.batches)
            .unwrap_or_default();
        all.extend(partials.iter().cloned());
        let compacted = phases.reduce(all).await?;
        let touched = if phases.group_count == 0 {
            compacted.clone()
        } else {
            TouchedKeys::of(&partials, phases.group_count)?.filter(&compacted)?
        };
        if phases.ttl_nanos.is_some() {
            self.expiry(phases)?.touch(&partials, phases.group_count)?;
        }
        let rows = compacted.iter().map(RecordBatch::num_rows).sum();
        self.windows.insert(
            KEYED,
            StateList {
                batches: compacted,
                table: None,
                rows,
                compacted_rows: rows,
            },
        );
        phases.finalize(touched).await
    }

    /// Restore: merges checkpointed keyed state into this shard (nothing is emitted).
    pub(super) async fn absorb(&mut self, phases: &Phases, state: Vec<RecordBatch>) -> Result<()> {
        let mut all = self
            .windows
            .remove(&KEYED)
            .map(|s| s.batches)
            .unwrap_or_default();
        all.extend(state);
        let compacted = phases.reduce(all).await?;
        let rows = compacted.iter().map(RecordBatch::num_rows).sum();
        self.windows.insert(
            KEYED,
            StateList {
                batches: compacted,
                table: None,
                rows,
                compacted_rows: rows,
            },
        );
        Ok(())
    }

    /// This shard's `state_ttl` stamps, created on first use.
    pub(super) fn expiry(&mut self, phases: &Phases) -> Result<&mut Expiry> {
        if self.expiry.is_none() {
            self.expiry = Some(Expiry::new(&phases.state_schema, phases.group_count)?);
        }
        self.expiry
            .as_mut()
            .ok_or_else(|| OperatorError::Internal("state_ttl stamps vanished".into()))
    }

    /// Keyed with `state_ttl`: stamps the groups touched since the last call with `watermark`
    /// (nanoseconds) and forgets those not updated since `watermark - ttl`. Returns how many.
    pub(super) fn expire(&mut self, phases: &Phases, watermark: i64) -> Result<usize> {
        Ok(self.expire_rows(phases, watermark, false)?.0)
    }

    /// [`Shard::expire`], returning the dropped groups' state rows too; every group when
    /// `all`.
    pub(super) fn expire_rows(
        &mut self,
        phases: &Phases,
        watermark: i64,
        all: bool,
    ) -> Result<(usize, Vec<RecordBatch>)> {
        let Some(ttl) = phases.ttl_nanos else {
            return Ok((0, Vec::new()));
        };
        let group_count = phases.group_count;
        let mut state = self.windows.remove(&KEYED).unwrap_or_default();
        let cutoff = (!all).then(|| watermark.saturating_sub(ttl));
        let dropped =
            self.expiry(phases)?
                .expire(&mut state.batches, group_count, watermark, cutoff);
        if dropped.as_ref().is_ok_and(|d| d.0 > 0) {
            state.rows = state.batches.iter().map(RecordBatch::num_rows).sum();
            state.compacted_rows = state.rows;
        }
        if !state.batches.is_empty() {
            self.windows.insert(KEYED, state);
        }
        dropped
    }

    /// Keyed: merges the epoch into the single state, noting the groups it touched for
    /// `state_ttl`, and emits nothing.
    pub(super) async fn absorb_touched(
        &mut self,
        phases: &Phases,
        partials: Vec<RecordBatch>,
    ) -> Result<()> {
        if phases.ttl_nanos.is_some() {
            self.expiry(phases)?.touch(&partials, phases.group_count)?;
        }
        self.absorb(phases, partials).await
    }

    /// Keyed state rows (for stamping restored groups).
    pub(super) fn keyed_state(&self) -> &[RecordBatch] {
        self.windows
            .get(&KEYED)
            .map_or(&[], |s| s.batches.as_slice())
    }

    /// Every state row this shard holds (for a checkpoint).
    ///
    /// # Errors
    /// DataFusion failures reading a group table.
    pub(super) fn state(&self, phases: &Phases) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for window in self.windows.values() {
            out.extend(window.batches(phases)?);
        }
        Ok(out)
    }

    /// Finalises the windows in `due` (those this shard holds), in the given order, and drops
    /// them unless `keep`.
    pub(super) async fn emit(
        &mut self,
        phases: &Phases,
        due: &[Option<i64>],
        keep: bool,
    ) -> Result<Vec<(Option<i64>, Vec<RecordBatch>)>> {
        let mut out = Vec::with_capacity(due.len());
        for start in due {
            if keep {
                if let Some(state) = self.windows.get(start) {
                    out.push((*start, phases.finalize(state.batches(phases)?).await?));
                }
            } else if let Some(state) = self.windows.remove(start) {
                out.push((*start, state.finish(phases).await?));
            }
        }
        Ok(out)
    }
}

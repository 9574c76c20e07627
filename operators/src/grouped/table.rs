//! One window's groups in a hash table that lives as long as the window: DataFusion's
//! `GroupValues` interns each state row's group key once, and each aggregate's
//! `GroupsAccumulator` merges the row's state into its group. An epoch costs O(its state rows),
//! not O(the window's groups); emitting a window evaluates the accumulators without hashing
//! again.
//!
//! The accumulators' `state()` drains them, so reading the window's state rows (a checkpoint,
//! a correction within `allowed_lateness`) takes its groups out of the table and keeps them
//! beside it as "taken" state rows; the rows that arrive next go into the emptied table. A
//! group may then be in both: the window's state is the taken rows plus the table's. A later
//! read takes out only what arrived since, so checkpointing every epoch costs O(the epoch),
//! and the taken rows are merged back into the table once they have doubled (and when the
//! window is emitted).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use volley_sql::stream::operator::{OperatorError, Result};

/// How to build a window's table: the group key's schema and where each aggregate's state
/// columns sit in a state row.
#[derive(Debug)]
pub(super) struct TableLayout {
    group_schema: SchemaRef,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    /// Per aggregate, its state columns in a state row.
    states: Vec<Range<usize>>,
    state_schema: SchemaRef,
    output_schema: SchemaRef,
}

impl TableLayout {
    /// The layout for state rows of `state_schema` (the first `group_count` columns are the
    /// group key, then each aggregate's state fields in order).
    ///
    /// # Errors
    /// An aggregate whose state fields cannot be listed, or state rows that are not
    /// `group_count` key columns plus those fields.
    pub(super) fn new(
        aggr_expr: &[Arc<AggregateFunctionExpr>],
        group_count: usize,
        state_schema: &SchemaRef,
        output_schema: &SchemaRef,
    ) -> Result<Self> {
        let mut states = Vec::with_capacity(aggr_expr.len());
        let mut at = group_count;
        for aggregate in aggr_expr {
            let fields = aggregate
                .state_fields()
                .map_err(OperatorError::exec("listing an aggregate's state"))?
                .len();
            states.push(at..at + fields);
            at += fields;
        }
        if at != state_schema.fields().len() {
            return Err(OperatorError::Internal(format!(
                "state rows have {} columns, the group key and aggregate states {at}",
                state_schema.fields().len()
            )));
        }
        let group_schema = Arc::new(Schema::new(state_schema.fields()[..group_count].to_vec()));
        Ok(Self {
            group_schema,
            aggr_expr: aggr_expr.to_vec(),
            states,
            state_schema: Arc::clone(state_schema),
            output_schema: Arc::clone(output_schema),
        })
    }

    fn group_count(&self) -> usize {
        self.group_schema.fields().len()
    }
}

/// The groups of one window, merged as state rows arrive.
pub(super) struct GroupTable {
    inner: Mutex<Groups>,
}

struct Groups {
    keys: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    indices: Vec<usize>,
    /// State rows taken out by readers and not merged back yet.
    taken: Vec<RecordBatch>,
    taken_rows: usize,
    /// Groups in the table when the taken rows were last merged back.
    merged_back: usize,
}

/// Merge the taken rows back once they exceed `2 × merged_back + TAKEN_SLACK`.
const TAKEN_SLACK: usize = 16_384;

impl std::fmt::Debug for GroupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupTable")
            .field("groups", &self.len())
            .finish()
    }
}

fn exec(what: &'static str) -> impl FnOnce(datafusion::error::DataFusionError) -> OperatorError {
    OperatorError::exec(what)
}

impl GroupTable {
    /// An empty table.
    ///
    /// # Errors
    /// DataFusion failing to make a key table or an accumulator.
    pub(super) fn new(layout: &TableLayout) -> Result<Self> {
        let keys = new_group_values(Arc::clone(&layout.group_schema), &GroupOrdering::None)
            .map_err(exec("making a group table"))?;
        let accumulators = layout
            .aggr_expr
            .iter()
            .map(|aggregate| {
                if aggregate.groups_accumulator_supported() {
                    aggregate.create_groups_accumulator()
                } else {
                    let aggregate = Arc::clone(aggregate);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        aggregate.create_accumulator()
                    })) as Box<dyn GroupsAccumulator>)
                }
            })
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(exec("making an aggregate's accumulator"))?;
        Ok(Self {
            inner: Mutex::new(Groups {
                keys,
                accumulators,
                indices: Vec::new(),
                taken: Vec::new(),
                taken_rows: 0,
                merged_back: 0,
            }),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Groups>> {
        self.inner
            .lock()
            .map_err(|_| OperatorError::Internal("a group table was poisoned".into()))
    }

    /// Bytes of memory the table holds: its keys, accumulators and the rows taken out of it.
    pub(super) fn size(&self) -> usize {
        let Ok(groups) = self.inner.lock() else {
            return 0;
        };
        let taken: usize = groups
            .taken
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        groups.keys.size()
            + groups.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + groups.indices.capacity() * std::mem::size_of::<usize>()
            + taken
    }

    /// State rows held: the table's groups and the rows taken out of it.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().map_or(0, |g| g.keys.len() + g.taken_rows)
    }

    /// Merges state rows into their groups.
    ///
    /// # Errors
    /// DataFusion failures interning or merging.
    pub(super) fn merge(&self, layout: &TableLayout, rows: &RecordBatch) -> Result<()> {
        let mut groups = self.lock()?;
        merge_rows(&mut groups, layout, rows)?;
        if groups.taken_rows > 2 * groups.merged_back + TAKEN_SLACK {
            merge_back(&mut groups, layout)?;
        }
        Ok(())
    }

    /// The window's state rows: those taken out before, and the table's groups, which are
    /// taken out now (see the module docs).
    ///
    /// # Errors
    /// DataFusion failures reading the table.
    pub(super) fn state(&self, layout: &TableLayout) -> Result<Vec<RecordBatch>> {
        let mut groups = self.lock()?;
        if !groups.keys.is_empty() {
            let rows = take(&mut groups, layout, false)?;
            groups.taken_rows += rows.num_rows();
            groups.taken.push(rows);
        }
        Ok(groups.taken.clone())
    }

    /// The final aggregate rows of every group (the aggregate's output schema); the table is
    /// consumed.
    ///
    /// # Errors
    /// DataFusion failures merging or evaluating the aggregates.
    pub(super) fn finish(self, layout: &TableLayout) -> Result<RecordBatch> {
        let mut groups = self
            .inner
            .into_inner()
            .map_err(|_| OperatorError::Internal("a group table was poisoned".into()))?;
        merge_back(&mut groups, layout)?;
        take(&mut groups, layout, true)
    }
}

/// Interns `rows`' keys and merges their states.
fn merge_rows(groups: &mut Groups, layout: &TableLayout, rows: &RecordBatch) -> Result<()> {
    if rows.num_rows() == 0 {
        return Ok(());
    }
    let columns = rows.columns();
    groups
        .keys
        .intern(&columns[..layout.group_count()], &mut groups.indices)
        .map_err(exec("merging aggregate state"))?;
    let total = groups.keys.len();
    for (accumulator, state) in groups.accumulators.iter_mut().zip(&layout.states) {
        accumulator
            .merge_batch(&columns[state.clone()], &groups.indices, total)
            .map_err(exec("merging aggregate state"))?;
    }
    Ok(())
}

/// Merges the taken rows back into the table.
fn merge_back(groups: &mut Groups, layout: &TableLayout) -> Result<()> {
    for rows in std::mem::take(&mut groups.taken) {
        merge_rows(groups, layout, &rows)?;
    }
    groups.taken_rows = 0;
    groups.merged_back = groups.keys.len();
    Ok(())
}

/// Every group's key and, per aggregate, its state (`finals`: its final value), as one batch.
fn take(groups: &mut Groups, layout: &TableLayout, finals: bool) -> Result<RecordBatch> {
    let schema = if finals {
        &layout.output_schema
    } else {
        &layout.state_schema
    };
    if groups.keys.is_empty() {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    }
    let held = groups.keys.len();
    let mut columns: Vec<ArrayRef> = groups
        .keys
        .emit(EmitTo::All)
        .map_err(exec("reading a group table"))?;
    // Emitting every group leaves the key table's index behind: clear it (sized for the
    // groups that may be merged back).
    groups.keys.clear_shrink(held);
    for accumulator in &mut groups.accumulators {
        if finals {
            columns.push(
                accumulator
                    .evaluate(EmitTo::All)
                    .map_err(exec("finalising aggregates"))?,
            );
        } else {
            columns.extend(
                accumulator
                    .state(EmitTo::All)
                    .map_err(exec("reading aggregate state"))?,
            );
        }
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| {
        OperatorError::Internal(format!(
            "a group table's rows do not fit the aggregate's schema: {e}"
        ))
    })
}

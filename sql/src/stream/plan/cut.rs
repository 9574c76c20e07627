//! Cutting a plan at its stateful nodes and the checks on what may stream.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::repartition::RepartitionExec;

use crate::stream::capability::{Capability, capability};

use crate::error::{Result, SqlError, StatementRef};
use crate::pipeline::InsertDecl;

use super::StreamPlanner;
use crate::stream::aggregate_plan::AggregatePlan;

impl StreamPlanner {
    /// Cuts `root` at every aggregate, innermost first: each becomes an [`AggregatePlan`]
    /// whose place in the plan a leaf over its output takes. Returns the outermost aggregate
    /// with the others as its `inner` and the rest of the plan as its `post`.
    pub(super) fn cut_aggregates(
        &self,
        root: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
    ) -> Result<AggregatePlan> {
        let at = insert.at;
        let mut stages = Vec::new();
        let post = self.cut(root, insert, &mut stages)?;
        let mut top = stages
            .pop()
            .ok_or_else(|| SqlError::Internal("an aggregate query without aggregate".into()))?;
        let mut read = Vec::new();
        collect_leaves(&post, &mut read);
        if read != [top.output_name.as_str()] {
            return Err(SqlError::Unsupported {
                at,
                message: "above its outermost aggregate a streaming query may read only that aggregate's rows (a UNION ALL or join of an aggregate with other rows or another aggregate is not supported yet): aggregate the union instead, or write each part to its own table".into(),
            });
        }
        for (i, inner) in stages.iter().enumerate() {
            let readers = stages[i + 1..]
                .iter()
                .chain(std::iter::once(&top))
                .filter(|s| {
                    let mut leaves = Vec::new();
                    collect_leaves(&s.partial, &mut leaves);
                    leaves.contains(&inner.output_name)
                })
                .count();
            if readers != 1 {
                return Err(SqlError::Internal(format!(
                    "the rows of {} are read by {readers} aggregates",
                    inner.output_name
                )));
            }
        }
        top.post = post;
        top.inner = stages;
        Ok(top)
    }

    /// The plan under `node` with every aggregate (innermost first, pushed onto `stages`)
    /// replaced by a leaf over its output.
    pub(super) fn cut(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        stages: &mut Vec<AggregatePlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(single) = single_phase(node)? {
            return self.cut(&single, insert, stages);
        }
        let children = node.children();
        let build = crate::stream::lookup::lookup_build_side(node.as_ref());
        let mut cut = Vec::with_capacity(children.len());
        for child in &children {
            // A lookup table's side of its join is bounded: it runs as in batch, uncut.
            if build.is_some_and(|b| Arc::ptr_eq(b, child)) {
                cut.push(Arc::clone(*child));
            } else {
                cut.push(self.cut(child, insert, stages)?);
            }
        }
        let node = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(node),
            cut,
        )
        .map_err(|e| SqlError::Internal(format!("cutting the plan at an aggregate: {e}")))?;
        if node.downcast_ref::<AggregateExec>().is_none() {
            return Ok(node);
        }
        let name = if stages.is_empty() {
            format!("{}#aggregate", insert.target)
        } else {
            format!("{}#aggregate{}", insert.target, stages.len())
        };
        let ports: Vec<_> = stages.iter().map(AggregatePlan::port).collect();
        let stage = self.split_aggregate(&node, insert, name, &ports)?;
        let leaf = Arc::clone(&stage.post);
        stages.push(stage);
        Ok(leaf)
    }
}

/// A two-phase aggregate (`Final` over a repartition or coalesce over `Partial`, which
/// DataFusion plans over an input of several partitions such as a UNION ALL) as one
/// single-phase aggregate over the partial's input: the streaming aggregate does its own
/// phases. None for any other node.
pub(super) fn single_phase(
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(last) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if !matches!(
        last.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    ) {
        return Ok(None);
    }
    let mut below = Arc::clone(last.input());
    loop {
        let is_exchange = below.downcast_ref::<CoalescePartitionsExec>().is_some()
            || below.downcast_ref::<RepartitionExec>().is_some()
            || crate::stream::capability::is_coalesce_batches(below.as_ref());
        if !is_exchange {
            break;
        }
        let Some(child) = below.children().first().map(|c| Arc::clone(*c)) else {
            break;
        };
        below = child;
    }
    let Some(first) = below
        .downcast_ref::<AggregateExec>()
        .filter(|a| a.mode() == &AggregateMode::Partial)
    else {
        return Err(SqlError::Internal(format!(
            "a final aggregate over {} instead of a partial one",
            below.name()
        )));
    };
    let single = AggregateExec::try_new(
        AggregateMode::Single,
        first.group_expr().clone(),
        first.aggr_expr().to_vec(),
        first.filter_expr().to_vec(),
        Arc::clone(first.input()),
        first.input_schema(),
    )
    .map_err(|e| SqlError::Internal(format!("joining a two-phase aggregate: {e}")))?;
    Ok(Some(Arc::new(single)))
}

/// The nodes of a plan the streaming planner handles apart, found by [`check_streamable`].
#[derive(Default)]
pub(super) struct Streamable {
    /// Aggregates.
    pub(super) aggregates: Vec<Arc<dyn ExecutionPlan>>,
    /// Joins of two streams.
    pub(super) joins: Vec<Arc<dyn ExecutionPlan>>,
    /// The keys of the sorts whose rows reach the sink (not below an aggregate or a join of
    /// two streams).
    pub(super) sorts: Vec<String>,
    /// The ancestors of the node being checked, its parent last.
    pub(super) above: Vec<Arc<dyn ExecutionPlan>>,
}

/// Checks every node can run per epoch; collects aggregate nodes, joins of two streams and
/// the sorts whose rows reach the sink. `stateful_above`: an aggregate or a join of two
/// streams reads `plan`'s rows.
pub(super) fn check_streamable(
    plan: &Arc<dyn ExecutionPlan>,
    at: StatementRef,
    stateful_above: bool,
    found: &mut Streamable,
) -> Result<()> {
    if let Some(message) = crate::stream::order::limit_refusal(plan.as_ref(), &found.above) {
        return Err(SqlError::Unsupported { at, message });
    }
    let mut children = plan.children();
    let mut stateful_above = stateful_above;
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && crate::stream::lookup::lookup_build_side(join).is_some()
    {
        // The build side is the lookup table, run once as in batch: only the probe side
        // streams.
        crate::stream::lookup::check_lookup_join(join, at)?;
        children = vec![join.right()];
    } else if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && is_stream_join(join)
    {
        found.joins.push(Arc::clone(plan));
        stateful_above = true;
    } else {
        match capability(plan.as_ref()) {
            Capability::Aggregate => {
                found.aggregates.push(Arc::clone(plan));
                stateful_above = true;
            }
            Capability::RowWise | Capability::PerEpoch => {}
            Capability::Refused(message) => return Err(SqlError::Unsupported { at, message }),
        }
        if !stateful_above
            && let Some(keys) = crate::stream::order::sort_keys(plan.as_ref(), &found.above)
        {
            found.sorts.push(keys);
        }
    }
    found.above.push(Arc::clone(plan));
    for child in children {
        check_streamable(child, at, stateful_above, found)?;
    }
    found.above.pop();
    Ok(())
}

/// Whether both sides of `join` read streams.
pub(super) fn is_stream_join(join: &HashJoinExec) -> bool {
    let mut left = Vec::new();
    collect_leaves(join.left(), &mut left);
    let mut right = Vec::new();
    collect_leaves(join.right(), &mut right);
    !left.is_empty() && !right.is_empty()
}

/// Splits the epoch leaves of `plan` into `workers` partitions when every node above them works
/// row by row (so partitions may run apart and their outputs, concatenated in partition order,
/// are the one-partition output). Any other node keeps the plan on one partition.
pub(super) fn partition_rowwise(
    plan: Arc<dyn ExecutionPlan>,
    workers: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    fn rowwise(plan: &Arc<dyn ExecutionPlan>) -> bool {
        if let Some(join) = plan.downcast_ref::<HashJoinExec>()
            && crate::stream::lookup::lookup_build_side(join).is_some()
        {
            // Each probe partition is joined with the one shared hash table on its own.
            return rowwise(join.right());
        }
        capability(plan.as_ref()) == Capability::RowWise && plan.children().into_iter().all(rowwise)
    }
    if workers <= 1 || !rowwise(&plan) {
        return Ok(plan);
    }
    plan.transform_up(
        |node| match node.downcast_ref::<crate::stream::leaf::EpochSourceExec>() {
            Some(leaf) => Ok(Transformed::yes(
                Arc::new(leaf.with_partitions(workers)?) as Arc<dyn ExecutionPlan>
            )),
            None => Ok(Transformed::no(node)),
        },
    )
    .map(|t| t.data)
    .map_err(|e| SqlError::Internal(format!("partitioning the plan across workers: {e}")))
}

/// Adds the inputs `plan` reads to `out`, each once (see [`crate::stream::leaf::leaves`]).
pub(super) fn collect_leaves(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    for input in crate::stream::leaf::leaves(plan) {
        if !out.contains(&input) {
            out.push(input);
        }
    }
}

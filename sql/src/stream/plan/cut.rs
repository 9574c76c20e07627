//! Cutting a plan at its stateful nodes and the checks on what may stream.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::repartition::RepartitionExec;

use super::rule::{PlanRule, RuleContext};
use crate::stream::capability::{Capability, capability};
use crate::stream::graph::StreamNode;

use crate::error::{Result, SqlError, StatementRef};
use crate::pipeline::InsertDecl;

use super::StreamPlanner;

/// A plan cut into its stateful nodes, in the order they run, and the segment above the last.
pub(super) type CutPlan = (Vec<Box<dyn StreamNode>>, Arc<dyn ExecutionPlan>);

/// Where cutting a plan got to: the nodes planned so far, or the node no rule took.
struct Cutting {
    /// The whole INSERT's plan, as the rules may read it.
    root: Arc<dyn ExecutionPlan>,
    nodes: Vec<Box<dyn StreamNode>>,
    untaken: Option<Arc<dyn ExecutionPlan>>,
}

impl StreamPlanner {
    /// Cuts `root` at every node a rule takes, bottom up: its stateful nodes in the order they
    /// run, and the segment above the last one (all of `root` when none is stateful). `None`
    /// for a join of two streams no rule takes (bounded by neither a window nor an interval).
    ///
    /// # Errors
    /// A rule's refusal; nodes whose rows are read by no node or by several.
    pub(super) fn cut_plan(
        &self,
        root: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<Option<CutPlan>> {
        let at = insert.at;
        let mut cutting = Cutting {
            root: Arc::clone(root),
            nodes: Vec::new(),
            untaken: None,
        };
        let post = self.cut(root, insert, state_ttl, &mut cutting)?;
        if let Some(node) = cutting.untaken {
            if let Some(join) = node.downcast_ref::<HashJoinExec>()
                && is_stream_join(join)
            {
                return Ok(None);
            }
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "{} holds state across micro-batches, and no streaming operator plans it in this form",
                    node.name()
                ),
            });
        }
        check_reads(&cutting.nodes, &post, at)?;
        Ok(Some((cutting.nodes, post)))
    }

    /// The plan under `node` with every node a rule takes replaced by a leaf over its output.
    fn cut(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        insert: &InsertDecl,
        state_ttl: Option<std::time::Duration>,
        cutting: &mut Cutting,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(single) = single_phase(node)? {
            return self.cut(&single, insert, state_ttl, cutting);
        }
        let children = node.children();
        let build = crate::stream::lookup::lookup_build_side(node.as_ref());
        let mut cut = Vec::with_capacity(children.len());
        for child in &children {
            // A lookup table's side of its join is bounded: it runs as in batch, uncut.
            if build.is_some_and(|b| Arc::ptr_eq(b, child)) {
                cut.push(Arc::clone(*child));
            } else {
                cut.push(self.cut(child, insert, state_ttl, cutting)?);
            }
            if cutting.untaken.is_some() {
                return Ok(Arc::clone(node));
            }
        }
        let node = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            Arc::clone(node),
            cut,
        )
        .map_err(|e| SqlError::Internal(format!("cutting the plan at a stateful node: {e}")))?;
        if !claimed(&self.rules, node.as_ref()) {
            return Ok(node);
        }
        let cx = RuleContext {
            planner: self,
            insert,
            state_ttl,
            root: &cutting.root,
            nodes: &cutting.nodes,
        };
        for rule in &self.rules {
            let Some(planned) = rule.plan(&node, &cx)? else {
                continue;
            };
            let port = planned.port();
            let leaf = crate::stream::leaf::EpochSourceExec::new(
                port.name.clone(),
                Arc::clone(&port.schema),
                None,
                Arc::clone(&port.slot),
            )
            .map_err(|e| SqlError::Internal(e.to_string()))?;
            cutting.nodes.push(planned);
            return Ok(Arc::new(leaf));
        }
        cutting.untaken = Some(Arc::clone(&node));
        Ok(node)
    }
}

/// Whether a rule claims `node`: it holds state across epochs.
fn claimed(rules: &[std::sync::Arc<dyn PlanRule>], node: &dyn ExecutionPlan) -> bool {
    rules.iter().any(|r| r.claims(node))
}

/// Checks every node's rows are read once: each node's by exactly one node above it, the
/// last one's by the segment above it, which reads nothing else.
fn check_reads(
    nodes: &[Box<dyn StreamNode>],
    post: &Arc<dyn ExecutionPlan>,
    at: StatementRef,
) -> Result<()> {
    let Some(last) = nodes.last() else {
        return Ok(());
    };
    let mut read = Vec::new();
    collect_leaves(post, &mut read);
    let last_port = last.port();
    if read != [last_port.name.as_str()] {
        let kind = last.kind();
        return Err(SqlError::Unsupported {
            at,
            message: format!(
                "above its outermost {kind} a streaming query may read only that {kind}'s rows (a UNION ALL or join of its rows with other rows or with another operator's is not supported yet): {} instead, or write each part to its own table",
                if kind == "aggregate" {
                    "aggregate the union"
                } else {
                    "write the rest in another INSERT"
                }
            ),
        });
    }
    for (i, node) in nodes.iter().enumerate().take(nodes.len() - 1) {
        let name = node.port().name;
        let readers = nodes[i + 1..]
            .iter()
            .filter(|n| n.inputs().contains(&name))
            .count();
        if readers != 1 {
            return Err(SqlError::Unsupported {
                at,
                message: format!(
                    "the rows of {} ({}) are read by {readers} operators: one INSERT streams one chain of operators, each reading the one below it; write the rest in another INSERT",
                    name,
                    node.port().described
                ),
            });
        }
    }
    Ok(())
}

/// A two-phase aggregate (`Final` over a repartition or coalesce over `Partial`, which
/// DataFusion plans over an input of several partitions such as a UNION ALL) as one
/// single-phase aggregate over the partial's input: the streaming aggregate does its own
/// phases. None for any other node.
fn single_phase(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
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

/// What [`check_streamable`] finds of a plan.
#[derive(Default)]
pub(super) struct Streamable {
    /// The keys of the sorts whose rows reach the sink (not below an aggregate or a join of
    /// two streams).
    pub(super) sorts: Vec<String>,
    /// The ancestors of the node being checked, its parent last.
    pub(super) above: Vec<Arc<dyn ExecutionPlan>>,
}

/// Checks every node can run per epoch (a rule claims it, or it is stateless) and collects the
/// sorts whose rows reach the sink. `stateful_above`: a node a rule claims reads `plan`'s
/// rows.
pub(super) fn check_streamable(
    plan: &Arc<dyn ExecutionPlan>,
    at: StatementRef,
    stateful_above: bool,
    rules: &[std::sync::Arc<dyn PlanRule>],
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
    } else if claimed(rules, plan.as_ref()) {
        stateful_above = true;
    } else {
        match capability(plan.as_ref()) {
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
        check_streamable(child, at, stateful_above, rules, found)?;
    }
    found.above.pop();
    Ok(())
}

/// Whether both sides of `join` read streams.
pub fn is_stream_join(join: &HashJoinExec) -> bool {
    let mut left = Vec::new();
    collect_leaves(join.left(), &mut left);
    let mut right = Vec::new();
    collect_leaves(join.right(), &mut right);
    !left.is_empty() && !right.is_empty()
}

/// Splits the epoch leaves of `plan` into `workers` partitions when every node above them works
/// row by row (so partitions may run apart and their outputs, concatenated in partition order,
/// are the one-partition output). Any other node keeps the plan on one partition.
pub(crate) fn partition_rowwise(
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

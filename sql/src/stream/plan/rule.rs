//! Planning rules: how an INSERT's DataFusion plan becomes stream graph nodes.
//!
//! The planner walks the physical plan bottom up. At each node, once the nodes below it are
//! cut (each stateful node below replaced by a leaf reading its port), it offers the node to
//! every registered rule in turn; the first that takes it returns a [`StreamNode`], and a leaf
//! reading that node's port takes its place in the plan above. A rule recognises its pattern
//! by downcasting DataFusion nodes, and may look at the nodes under the one offered.
//!
//! ```text
//!   ProjectionExec              ProjectionExec
//!     AggregateExec     ─▶        EpochSourceExec(out#aggregate)  ◀── node 2 (aggregate)
//!       HashJoinExec                                                    reads out#join
//!         left, right                                              ◀── node 1 (join)
//! ```
//!
//! What every rule needs (the sources' event times, late rows split at the leaves, the
//! ports of the nodes below, stable names) is in [`RuleContext`], written once.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

use super::{EventTime, SourceBinding, StreamPlanner, WindowStart};
use crate::error::{Result, StatementRef};
use crate::pipeline::InsertDecl;
use crate::stream::graph::{OutputPort, StreamNode};
use crate::stream::late::LateGate;
use crate::stream::trace::ColumnOrigin;
use crate::stream::window::WindowSpec;

/// One operator kind's planning rule.
pub trait PlanRule: std::fmt::Debug + Send + Sync {
    /// Whether `node` is of the DataFusion type this rule plans (an `AggregateExec`, a join of
    /// two streams): such a node holds state across epochs and must be taken by a rule.
    fn claims(&self, node: &dyn ExecutionPlan) -> bool;

    /// The node `node` plans to (its children already cut), or `None` when it is not this
    /// rule's after all (another rule may take it).
    ///
    /// # Errors
    /// The node's SQL cannot stream: the reason and the rewrite that does.
    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>>;
}

/// What a rule may read and use while planning one INSERT.
pub struct RuleContext<'a> {
    pub(crate) planner: &'a StreamPlanner,
    pub(crate) insert: &'a InsertDecl,
    pub(crate) state_ttl: Option<std::time::Duration>,
    pub(crate) root: &'a Arc<dyn ExecutionPlan>,
    pub(crate) nodes: &'a [Box<dyn StreamNode>],
}

impl RuleContext<'_> {
    /// Where the INSERT is, for errors.
    pub fn at(&self) -> StatementRef {
        self.insert.at
    }

    /// The INSERT's sink table.
    pub fn target(&self) -> &str {
        &self.insert.target
    }

    /// The sink's `state_ttl`, when it bounds a join of two streams the SQL left unbounded.
    pub fn state_ttl(&self) -> Option<std::time::Duration> {
        self.state_ttl
    }

    /// How many cores each epoch runs on.
    pub fn workers(&self) -> usize {
        self.planner.workers
    }

    /// The whole INSERT's physical plan, uncut (ranks marked): what a rule may read of the
    /// nodes above the one offered, such as the ranking that consumes a join's rows.
    pub fn insert_plan(&self) -> &Arc<dyn ExecutionPlan> {
        self.root
    }

    /// The nodes planned so far (those below the node offered, and beside it), in plan order.
    pub fn nodes(&self) -> &[Box<dyn StreamNode>] {
        self.nodes
    }

    /// The ports of the nodes planned so far.
    pub fn ports(&self) -> Vec<OutputPort> {
        self.nodes.iter().map(|n| n.port()).collect()
    }

    /// The streaming source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceBinding> {
        self.planner.sources.get(name)
    }

    /// The name a new node's output is read under: `<target>#<stem>` for the first named by
    /// `stem`, then `<target>#<stem>1`, `2`, … (the names checkpoints have always used).
    pub fn output_name(&self, stem: &str) -> String {
        let base = format!("{}#{stem}", self.insert.target);
        let before = self
            .nodes
            .iter()
            .filter(|n| {
                n.port()
                    .name
                    .strip_prefix(&base)
                    .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
            })
            .count();
        if before == 0 {
            base
        } else {
            format!("{base}{before}")
        }
    }

    /// `origin` as a source's watermarked event-time column: `Ok(None)` when it is not a
    /// source; an error naming `what` and `consequence` when the column has no watermark.
    ///
    /// # Errors
    /// A source column without a watermark.
    pub fn event_time(
        &self,
        origin: &ColumnOrigin,
        what: &str,
        consequence: &str,
    ) -> Result<Option<EventTime>> {
        self.planner
            .event_time(origin, what, consequence, self.insert.at)
    }

    /// [`RuleContext::event_time`] of a time that must come from a source.
    ///
    /// # Errors
    /// As [`RuleContext::event_time`]; an origin that is no source is a bug.
    pub fn source_event_time(
        &self,
        origin: &ColumnOrigin,
        what: &str,
        consequence: &str,
    ) -> Result<EventTime> {
        self.planner
            .source_event_time(origin, what, consequence, self.insert.at)
    }

    /// `plan` with a late-row filter through `gate` on every leaf reading one of `sources`:
    /// `start` turns the leaf's event-time column (cast to `ts_type`) into the row's window
    /// start.
    ///
    /// # Errors
    /// A leaf without its event-time column (a bug).
    pub fn late_at_leaves(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        sources: &[String],
        gate: &Arc<LateGate>,
        ts_type: &DataType,
        start: &WindowStart<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.planner
            .late_at_leaves(plan, sources, gate, ts_type, start)
    }

    /// `pre` with late rows of `window` (its bucket `window_expr` over `pre`'s output) split
    /// out at the leaves of its sources.
    ///
    /// # Errors
    /// As [`RuleContext::late_at_leaves`].
    pub fn split_late_at_leaves(
        &self,
        pre: &Arc<dyn ExecutionPlan>,
        window_expr: &Arc<dyn PhysicalExpr>,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.planner.split_late_at_leaves(pre, window_expr, window)
    }

    /// [`RuleContext::split_late_at_leaves`] where the bucket's time column (of type
    /// `pre_type`) is computed below `pre`'s output.
    ///
    /// # Errors
    /// As [`RuleContext::late_at_leaves`].
    pub fn split_late_typed(
        &self,
        pre: &Arc<dyn ExecutionPlan>,
        window_expr: &Arc<dyn PhysicalExpr>,
        pre_type: &DataType,
        window: &WindowSpec,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.planner
            .split_late_typed(pre, window_expr, pre_type, window)
    }

    /// `plan` with a late-row filter on each leaf of `sources` judging rows by their own
    /// event time (cast to `ts_type`).
    ///
    /// # Errors
    /// As [`RuleContext::late_at_leaves`].
    pub fn split_late_identity(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        sources: &[String],
        gate: &Arc<LateGate>,
        ts_type: &DataType,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.planner
            .split_late_identity(plan, sources, gate, ts_type)
    }

    /// `plan` over as many partitions as there are workers, when it works row by row.
    ///
    /// # Errors
    /// DataFusion failures re-partitioning a leaf.
    pub fn partition_rowwise(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        super::partition_rowwise(plan, self.planner.workers)
    }
}

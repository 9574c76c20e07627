//! A window operator as the streaming planner reads it: its functions and input
//! ([`window_parts`]), its input under DataFusion's sorts ([`unsorted`]), and a window operator
//! whose ranking the query keeps to its first ranks ([`RankLimitExec`], which
//! [`crate::stream::rank_limit`] marks).

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec, WindowExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    displayable,
};

/// The input under the sorts and exchanges DataFusion put below a window operator (a
/// streaming operator orders each partition's rows itself).
pub fn unsorted(mut plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
    loop {
        let exchange = plan.downcast_ref::<SortExec>().is_some()
            || plan.downcast_ref::<RepartitionExec>().is_some()
            || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<SortPreservingMergeExec>().is_some();
        match plan.children().first() {
            Some(child) if exchange => plan = Arc::clone(child),
            _ => return plan,
        }
    }
}

/// A window operator's functions and its input.
pub type WindowParts<'a> = (&'a [Arc<dyn WindowExpr>], &'a Arc<dyn ExecutionPlan>);

/// The functions and input of `node` when it is a window operator (bounded or not).
pub fn window_parts(node: &dyn ExecutionPlan) -> Option<WindowParts<'_>> {
    if let Some(marked) = node.downcast_ref::<RankLimitExec>() {
        return window_parts(marked.window().as_ref());
    }
    if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
        return Some((w.window_expr(), w.input()));
    }
    node.downcast_ref::<WindowAggExec>()
        .map(|w| (w.window_expr(), w.input()))
}

/// A window operator whose ranking column the query keeps only up to `limit`.
#[derive(Debug)]
pub struct RankLimitExec {
    window: Arc<dyn ExecutionPlan>,
    rank: usize,
    limit: u64,
}

impl RankLimitExec {
    /// `window` (a window operator), whose column `rank` the query keeps up to `limit`.
    pub fn new(window: Arc<dyn ExecutionPlan>, rank: usize, limit: u64) -> Self {
        Self {
            window,
            rank,
            limit,
        }
    }

    /// The window operator.
    pub fn window(&self) -> &Arc<dyn ExecutionPlan> {
        &self.window
    }

    /// The ranking column, in the window operator's output.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The greatest rank kept.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl DisplayAs for RankLimitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RankLimitExec: ranks <= {} of {}",
            self.limit,
            displayable(self.window.as_ref())
                .one_line()
                .to_string()
                .trim_end()
        )
    }
}

impl ExecutionPlan for RankLimitExec {
    fn name(&self) -> &str {
        "RankLimitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.window.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.window.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.window.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            window: replace_children_if_necessary(Arc::clone(&self.window), children)?,
            rank: self.rank,
            limit: self.limit,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.window.execute(partition, context)
    }
}

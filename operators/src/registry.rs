//! The runtimes of the stream graph's operator kinds, one registration line each: the runner
//! asks each in turn to run a node, and never looks at a node's concrete type itself.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use volley_sql::stream::graph::StreamNode;

use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::operator::{OperatorError, Result};

/// Builds the runtime of a node of its own kind, or `None`.
type Runtime = fn(&dyn StreamNode, Arc<TaskContext>) -> Option<Box<dyn StreamOperator>>;

/// Every operator kind's runtime.
const RUNTIMES: &[Runtime] = &[crate::aggregate::runtime, crate::join::runtime];

/// The runtime of `node`, executing in `task_ctx`.
///
/// # Errors
/// A node of a kind no runtime is registered for (a bug).
pub fn runtime(
    node: &dyn StreamNode,
    task_ctx: &Arc<TaskContext>,
) -> Result<Box<dyn StreamOperator>> {
    RUNTIMES
        .iter()
        .find_map(|runtime| runtime(node, Arc::clone(task_ctx)))
        .ok_or_else(|| {
            OperatorError::Internal(format!(
                "no runtime runs operator kind '{}' ({})",
                node.kind(),
                node.port().name
            ))
        })
}

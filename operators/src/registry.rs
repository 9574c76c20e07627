//! Every operator kind's planning rule, one registration line each, in the order the planner
//! offers them a node.

use std::sync::Arc;

use volley_sql::stream::rule::PlanRule;

/// The rules of every operator kind.
pub fn rules() -> Vec<Arc<dyn PlanRule>> {
    vec![
        Arc::new(crate::aggregate::AggregateRule),
        Arc::new(crate::join::JoinRule),
    ]
}

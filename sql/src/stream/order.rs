//! LIMIT and ORDER BY over a stream.
//!
//! A streaming plan runs once per micro-batch, so a LIMIT, an OFFSET or a top N (an ORDER BY
//! with a LIMIT, which DataFusion plans as a sort with a `fetch`) would apply to each
//! micro-batch, not to the stream: the result would depend on how the input was cut. Wherever
//! DataFusion put the limit (its own node, or pushed into a sort, a scan or an exchange), it is
//! refused. An ORDER BY alone sorts each micro-batch's rows; that is the batch answer only for
//! rows that are each emitted once, complete: a windowed aggregate's (or a windowed join's)
//! rows. Over source rows or a keyed aggregate's updates it is refused.

use std::sync::Arc;

use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;

use crate::error::{Result, SqlError, StatementRef};

/// Why `node` is refused for a LIMIT or OFFSET (its own, or one DataFusion pushed into it);
/// `None` when it holds none. `above`: its ancestors, its parent last (they name its columns).
pub fn limit_refusal(node: &dyn ExecutionPlan, above: &[Arc<dyn ExecutionPlan>]) -> Option<String> {
    let (skip, fetch) = if let Some(limit) = node.downcast_ref::<GlobalLimitExec>() {
        (limit.skip(), limit.fetch())
    } else if let Some(limit) = node.downcast_ref::<LocalLimitExec>() {
        (0, Some(limit.fetch()))
    } else {
        (0, Some(node.fetch()?))
    };
    let clause = match (skip, fetch) {
        (0, Some(n)) => format!("LIMIT {n}"),
        (skip, Some(n)) => format!("LIMIT {n} OFFSET {skip}"),
        (skip, None) => format!("OFFSET {skip}"),
    };
    // A limit over a sort, or a sort holding the limit, is a top N.
    let sort = sort_keys(node, above).or_else(|| {
        let child = node.children().first().copied()?;
        // The limit passes the sort's columns on unchanged: what names them names the sort's.
        passes_columns(node)
            .then(|| sort_keys(child.as_ref(), above))
            .flatten()
    });
    let (clause, top_n) = match sort {
        Some(keys) => (
            format!("ORDER BY {keys} {clause}"),
            "; a top N per window (ROW_NUMBER() OVER (PARTITION BY <window> ORDER BY …) <= N) is not streamed yet",
        ),
        None => (clause, ""),
    };
    Some(format!(
        "{clause} over a stream: it would apply to each micro-batch, not to the whole stream, which has no end (the result would depend on how the input is cut into micro-batches). Remove it, or run the query with `volley batch` over the bounded input{top_n}"
    ))
}

/// The ORDER BY keys of `node` as the query wrote them, when it is a sort: a column by the
/// name a projection in `above` (its ancestors, its parent last) gives it, otherwise as SQL.
pub fn sort_keys(node: &dyn ExecutionPlan, above: &[Arc<dyn ExecutionPlan>]) -> Option<String> {
    let ordering = if let Some(sort) = node.downcast_ref::<SortExec>() {
        sort.expr()
    } else {
        node.downcast_ref::<SortPreservingMergeExec>()?.expr()
    };
    let keys: Vec<String> = ordering
        .iter()
        .map(|key| {
            let expr = key
                .expr
                .downcast_ref::<Column>()
                .and_then(|c| alias_of(c.index(), above))
                .unwrap_or_else(|| crate::sql_text::expr(&key.expr));
            // NULLs sort as the largest value unless the query says otherwise.
            match (key.options.descending, key.options.nulls_first) {
                (false, false) => expr,
                (false, true) => format!("{expr} NULLS FIRST"),
                (true, true) => format!("{expr} DESC"),
                (true, false) => format!("{expr} DESC NULLS LAST"),
            }
        })
        .collect();
    Some(keys.join(", "))
}

/// The name the query gives a node's output column `index`: its alias in the last projection
/// above the node (`above`, its parent last) that it reaches through nodes passing columns on.
fn alias_of(mut index: usize, above: &[Arc<dyn ExecutionPlan>]) -> Option<String> {
    let mut alias = None;
    for parent in above.iter().rev() {
        if let Some(projection) = parent.downcast_ref::<ProjectionExec>() {
            let Some(at) = projection.expr().iter().position(|e| {
                e.expr
                    .downcast_ref::<Column>()
                    .is_some_and(|c| c.index() == index)
            }) else {
                break;
            };
            alias = Some(projection.expr()[at].alias.clone());
            index = at;
        } else if !passes_columns(parent.as_ref()) {
            break;
        }
    }
    alias
}

/// Whether `node`'s output columns are its input's, in the same places.
fn passes_columns(node: &dyn ExecutionPlan) -> bool {
    matches!(
        node.name(),
        "SortExec"
            | "SortPreservingMergeExec"
            | "GlobalLimitExec"
            | "LocalLimitExec"
            | "CoalescePartitionsExec"
            | "CoalesceBatchesExec"
            | "RepartitionExec"
            | "CooperativeExec"
    ) || node
        .downcast_ref::<FilterExec>()
        .is_some_and(|f| f.projection().is_none())
}

/// What the rows a query writes are, as far as sorting them goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// Each emitted once, complete, a window at a time: a windowed aggregate's or a windowed
    /// join's rows.
    Windows,
    /// A keyed aggregate's updates, per micro-batch.
    Updates,
    /// Rows as they stream in: source rows, an interval join's rows.
    Rows,
}

/// Checks the sorts whose rows reach the sink (`sorts`: their keys, as [`sort_keys`] writes
/// them; sorts below an aggregate or a join of two streams, which take their input in any
/// order, are not among them) sort rows emitted once, complete: [`Emitted::Windows`].
///
/// # Errors
/// An ORDER BY over source rows, a keyed aggregate's updates or an interval join's rows.
pub fn check_sorts(sorts: &[String], emitted: Emitted, at: StatementRef) -> Result<()> {
    let Some(keys) = sorts.first() else {
        return Ok(());
    };
    let message = match emitted {
        Emitted::Windows => return Ok(()),
        Emitted::Updates => format!(
            "ORDER BY {keys} over a keyed aggregate (GROUP BY without a window): its rows are updates, emitted per micro-batch, so only each micro-batch's updates would be sorted. Window the aggregate (GROUP BY date_bin(INTERVAL ..., event_time), ...): each window's rows are emitted once, complete, and sorted; or run `volley batch`"
        ),
        Emitted::Rows => format!(
            "ORDER BY {keys} over a stream: a stream has no end, so its rows cannot be sorted as a whole, only each micro-batch on its own. Sort a windowed aggregate's rows instead (GROUP BY date_bin(INTERVAL ..., event_time), ... ORDER BY ...): each window's rows are emitted once, complete, and sorted; or run `volley batch`"
        ),
    };
    Err(SqlError::Unsupported { at, message })
}

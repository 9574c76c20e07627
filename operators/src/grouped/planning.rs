//! What every grouped operator's rule and node share: where group keys come from (for group
//! mode), the GROUPING SETS check, and how `explain` shows the phases.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use volley_sql::error::{Result, SqlError, StatementRef};
use volley_sql::stream::render::{indent_by, render};
use volley_sql::stream::rule::RuleContext;
use volley_sql::stream::trace::{column_of, trace_column};

use super::TwoPhase;

/// A source column a group key is copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// The source table.
    pub table: String,
    /// The column of that table.
    pub column: String,
}

/// The source columns a group expression over `pre`'s output is copied from.
pub(crate) fn key_sources(
    expr: &Arc<dyn PhysicalExpr>,
    pre: &Arc<dyn ExecutionPlan>,
    cx: &RuleContext<'_>,
) -> Vec<KeySource> {
    let Some(origins) = column_of(expr).and_then(|c| trace_column(pre, c)) else {
        return Vec::new();
    };
    origins
        .iter()
        .map(|o| {
            let source = cx.source(&o.input)?;
            Some(KeySource {
                table: o.input.clone(),
                column: source.schema.fields().get(o.column)?.name().clone(),
            })
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// Whether some group key (of `phases`, copied from `key_sources`) is copied unchanged (or
/// cast) from `table`'s column `column`: then rows of one group all share that column's value.
pub(crate) fn groups_by_source_column(
    phases: &TwoPhase,
    key_sources: &[Vec<KeySource>],
    table: &str,
    column: &str,
) -> bool {
    // A key that some grouping set rolls up does not confine that set's groups.
    let sets: Vec<Vec<bool>> = phases
        .partial
        .downcast_ref::<AggregateExec>()
        .map(|a| a.group_expr().groups().to_vec())
        .unwrap_or_default();
    key_sources.iter().enumerate().any(|(i, sources)| {
        sets.iter().all(|set| !set.get(i).copied().unwrap_or(false))
            && !sources.is_empty()
            && sources
                .iter()
                .all(|s| s.table == table && s.column == column)
    })
}

/// The aggregates, state and per-micro-batch plan of grouped state over `shards` shards, for
/// `explain`, indented by `pad`.
pub(crate) fn explain_phases(out: &mut String, phases: &TwoPhase, shards: usize, pad: &str) {
    let aggs: Vec<&str> = phases.aggr_expr.iter().map(|a| a.name()).collect();
    let _ = writeln!(
        out,
        "{pad}  aggregates (two-phase: partial per micro-batch, merged state, final at emission): {}",
        volley_sql::sql_text::tidy(&aggs.join(", "))
    );
    let _ = writeln!(
        out,
        "{pad}  state: hash-partitioned by group key across {shards} shard(s)"
    );
    let _ = writeln!(
        out,
        "{pad}  per micro-batch (stateless segment + partial aggregate, {} partition(s)):",
        phases.partial.output_partitioning().partition_count()
    );
    indent_by(out, &render(&phases.partial), pad);
}

/// GROUPING SETS / ROLLUP / CUBE stream inside a window that every set keeps: each set's
/// rows are then per window, emitted when it closes. A set without the window would be one
/// group over all time, and a keyed aggregate would upsert a rolled-up NULL and a NULL key
/// into one sink row.
pub(crate) fn check_grouping_sets(
    group_by: &PhysicalGroupBy,
    window: Option<(usize, &str)>,
    at: StatementRef,
) -> Result<()> {
    let Some((window_index, window_display)) = window else {
        return Err(SqlError::Unsupported {
            at,
            message: "GROUPING SETS / ROLLUP / CUBE stream only inside a window: add the window to every set (GROUP BY date_bin(INTERVAL ..., event_time), ROLLUP(a, b)), or run `volley batch`".into(),
        });
    };
    if group_by
        .groups()
        .iter()
        .any(|set| set.get(window_index).copied().unwrap_or(true))
    {
        return Err(SqlError::Unsupported {
            at,
            message: format!(
                "GROUPING SETS / ROLLUP / CUBE: a set without the window {} would be one group over all time that never closes; keep the window in every set (GROUP BY {}, ROLLUP(...))",
                window_display, window_display
            ),
        });
    }
    Ok(())
}

//! Whether a sink can hold what its INSERT produces, checked when the pipeline is planned.
//!
//! A keyed aggregate (`GROUP BY k` without a window) updates its rows every micro-batch: each
//! epoch re-emits the groups it touched. Written to an append-only sink, every update would be
//! one more row (a Parquet sink held 674 rows for 560 keys, with the counts summed twice). So
//! an updating result needs a sink that upserts by a `merge_key` that is exactly its group
//! columns; anything else is refused before a row is read, naming the fix.

use std::collections::BTreeSet;

use volley_connectors::Connector;
use volley_sql::stream::QueryPlan;
use volley_sql::stream::graph::Emit;
use volley_sql::{SqlError, TableDecl};

use crate::error::Result;

/// Whether `plan`'s rows update earlier rows (upserts) rather than only adding new ones: a
/// keyed aggregate, or a windowed one that corrects emitted windows (`allowed_lateness`).
pub fn updates(plan: &QueryPlan) -> bool {
    plan.emit() == Emit::Upsert
}

/// Checks that every `merge_key` column of `table` is a column of `schema`, what the INSERT
/// into `target` at `at` writes.
///
/// # Errors
/// [`SqlError::Plan`] naming the INSERT, the table, the column and the columns there are.
pub fn check_merge_key(
    table: &TableDecl,
    schema: &arrow::datatypes::Schema,
    at: volley_sql::StatementRef,
    target: &str,
) -> Result<()> {
    let outputs: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for key in table.merge_key().unwrap_or_default() {
        if !outputs.contains(&key.as_str()) {
            return Err(SqlError::Plan {
                at,
                message: format!(
                    "INSERT INTO {target}: option 'merge_key' of table '{}' names '{key}', which the query does not output (it outputs: {})",
                    table.name,
                    outputs.join(", ")
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// Checks that `table` (opened through `connector`) can take what `plan` writes into it.
///
/// # Errors
/// [`SqlError::Plan`] naming the INSERT, the table and the fix: a `merge_key` column the query
/// does not output; an updating result into a sink without `merge_key`, into a kind that only
/// appends, or keyed by other columns than its groups.
pub fn check_sink(plan: &QueryPlan, table: &TableDecl, connector: &dyn Connector) -> Result<()> {
    let at = plan.at;
    let fail = |message: String| -> crate::error::EngineError {
        SqlError::Plan {
            at,
            message: format!("INSERT INTO {}: {message}", plan.target),
        }
        .into()
    };
    check_merge_key(table, &plan.output_schema, plan.at, &plan.target)?;
    let merge_key = table.merge_key().filter(|k| !k.is_empty());
    let ttl_join = plan.ttl_bounded_join();
    if table.state_ttl()?.is_some() && !updates(plan) && !ttl_join {
        return Err(fail(format!(
            "option 'state_ttl' of table '{}' bounds the state of an aggregate without a window, and this INSERT has none (a window's state is released when the watermark passes it; a join of two streams takes 'state_ttl' only when it has neither a shared window nor an interval)",
            table.name
        )));
    }
    if !updates(plan) {
        return Ok(());
    }
    let groups = if plan.key_columns.is_empty() {
        "its groups".to_string()
    } else {
        plan.key_columns.join(", ")
    };
    if plan.corrects_windows() {
        let keys = plan.key_columns.join(", ");
        if !connector.accepts_updates(table) {
            return Err(fail(format!(
                "option 'allowed_lateness' re-emits corrected windows as upserts, so table '{}' needs a sink that upserts by a 'merge_key' (DELTA, KAFKA): OPTIONS ('merge_key' '{keys}')",
                table.name
            )));
        }
    }
    let window_hint = "or group by a window (date_bin, tumble or date_trunc over a watermarked event-time column), whose rows are final when emitted";
    if plan.key_columns.is_empty() {
        return Err(fail(format!(
            "the aggregate has no window, so its rows update every micro-batch, but none of its output columns identifies a group (a sink could not tell which row an update replaces); output the GROUP BY columns, {window_hint}"
        )));
    }
    if !connector.accepts_updates(table) {
        return Err(fail(match &merge_key {
            None => format!(
                "GROUP BY {groups} without a window updates its rows every micro-batch (upserts keyed by {groups}), but table '{}' has no 'merge_key', so every update would be added as another row. Add OPTIONS ('merge_key' '{groups}') to a sink that upserts (DELTA, KAFKA), {window_hint}",
                table.name
            ),
            Some(_) => format!(
                "GROUP BY {groups} without a window updates its rows every micro-batch, but table '{}' is STORED AS {}, which only appends (every update would be another row). Write it to a DELTA table or KAFKA topic with OPTIONS ('merge_key' '{groups}'), {window_hint}",
                table.name, table.kind
            ),
        }));
    }
    let want: BTreeSet<&str> = plan.key_columns.iter().map(String::as_str).collect();
    let have: BTreeSet<&str> = merge_key.iter().flatten().map(String::as_str).collect();
    if want != have {
        return Err(fail(format!(
            "the result updates one row per group ({groups}), but table '{}' merges by '{}': with other columns, updates of different groups would replace each other or pile up. Use OPTIONS ('merge_key' '{groups}')",
            table.name,
            have.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Gives an aggregate its sink's `allowed_lateness` (windowed) and `state_ttl` (keyed).
/// `state_ttl` counts event time: every source the query reads needs a watermark. Run before
/// [`check_sink`], which then sees a correcting window as an updating result.
///
/// # Errors
/// Bad values; `allowed_lateness` on an INSERT without a window; `state_ttl` over a source
/// without a watermark.
pub fn apply_sink_options(
    plan: &mut QueryPlan,
    table: &TableDecl,
    pipeline: &volley_sql::Pipeline,
) -> Result<()> {
    let lateness = table.allowed_lateness()?;
    if lateness.is_some()
        && let Err(why) = plan.apply_sink_options(lateness, None)
    {
        return Err(SqlError::Plan {
            at: plan.at,
            message: format!(
                "INSERT INTO {}: option 'allowed_lateness' of table '{}' {why}",
                plan.target, table.name
            ),
        }
        .into());
    }
    let Some(ttl) = table.state_ttl()? else {
        return Ok(());
    };
    for source in &plan.sources {
        if pipeline
            .table(source)
            .is_some_and(|t| t.watermark.is_none())
        {
            return Err(SqlError::Plan {
                at: plan.at,
                message: format!(
                    "INSERT INTO {}: option 'state_ttl' of table '{}' counts event time, but source '{source}' has no watermark; declare one: OPTIONS ('watermark' '<column> - INTERVAL ''5 seconds''')",
                    plan.target, table.name
                ),
            }
            .into());
        }
    }
    plan.apply_sink_options(None, Some(ttl))
        .map_err(|why| SqlError::Pipeline(why).into())
}

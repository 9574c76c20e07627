//! A join of two streams bounded by the sink's `state_ttl`: with neither a shared window nor
//! an interval between the event times, the join would hold every row forever. With
//! `state_ttl` it joins only rows whose event times lie within the TTL of each other, which
//! streams as an interval join: `ON … AND r.ts BETWEEN l.ts - ttl AND l.ts + ttl` is added to
//! the join's condition before it is planned. Pairs further apart than the TTL are not
//! joined, so the result can differ from the batch join, and `explain` says so.

use std::collections::HashMap;
use std::time::Duration;

use arrow::datatypes::IntervalMonthDayNano;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, Operator, binary_expr, lit};

use crate::error::{Result, SqlError, StatementRef};

/// The stream tables a logical plan scans, by name.
fn scanned(plan: &LogicalPlan, streams: &HashMap<String, String>, out: &mut Vec<String>) {
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table().to_string();
            if streams.contains_key(&name) && !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

/// The event-time column a join side outputs: the one field named like the watermark column
/// of a stream it reads.
fn side_time(
    side: &LogicalPlan,
    streams: &HashMap<String, String>,
    which: &str,
    at: StatementRef,
) -> Result<Option<Column>> {
    let mut tables = Vec::new();
    scanned(side, streams, &mut tables);
    if tables.is_empty() {
        return Ok(None);
    }
    let mut found: Vec<Column> = Vec::new();
    for table in &tables {
        let column = &streams[table];
        for (qualifier, field) in side.schema().iter() {
            if field.name() == column {
                let c = Column::new(qualifier.cloned(), field.name());
                if !found.contains(&c) {
                    found.push(c);
                }
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(Some(one.clone())),
        [] => Err(SqlError::Unsupported {
            at,
            message: format!(
                "a join of two streams bounded by 'state_ttl' keeps rows by their event time, but its {which} side ({}) does not output its event-time column ({}); select it in that side",
                tables.join(", "),
                tables
                    .iter()
                    .map(|t| format!("'{}'", streams[t]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        many => Err(SqlError::Unsupported {
            at,
            message: format!(
                "a join of two streams bounded by 'state_ttl' keeps rows by their event time, but its {which} side outputs several ({}); output one",
                many.iter()
                    .map(Column::flat_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// `plan` with every join of two streams (`streams`: watermarked source → its event-time
/// column) restricted to rows whose event times are at most `ttl` apart. Returns how many
/// joins it bounded.
///
/// # Errors
/// A side of such a join that does not output exactly one event-time column.
pub fn bound_stream_joins(
    plan: LogicalPlan,
    streams: &HashMap<String, String>,
    ttl: Duration,
    at: StatementRef,
) -> Result<(LogicalPlan, usize)> {
    let nanos = i64::try_from(ttl.as_nanos()).map_err(|_| SqlError::Unsupported {
        at,
        message: format!(
            "option 'state_ttl' ({}) is too long",
            crate::sql_text::duration(ttl)
        ),
    })?;
    let span = || {
        lit(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(0, 0, nanos),
        )))
    };
    let mut bounded = 0;
    let mut failure = None;
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::Join(mut join) = node else {
                return Ok(Transformed::no(node));
            };
            let sides = side_time(&join.left, streams, "left", at)
                .and_then(|l| Ok((l, side_time(&join.right, streams, "right", at)?)));
            let (left, right) = match sides {
                Ok((Some(l), Some(r))) => (l, r),
                Ok(_) => return Ok(Transformed::no(LogicalPlan::Join(join))),
                Err(e) => {
                    failure = Some(e);
                    return Ok(Transformed::no(LogicalPlan::Join(join)));
                }
            };
            let (l, r) = (Expr::Column(left), Expr::Column(right));
            let bound = binary_expr(
                r.clone(),
                Operator::GtEq,
                binary_expr(l.clone(), Operator::Minus, span()),
            )
            .and(binary_expr(
                r,
                Operator::LtEq,
                binary_expr(l, Operator::Plus, span()),
            ));
            join.filter = Some(match join.filter.take() {
                Some(filter) => filter.and(bound),
                None => bound,
            });
            bounded += 1;
            Ok(Transformed::yes(LogicalPlan::Join(join)))
        })
        .map_err(|e| SqlError::Internal(format!("bounding a stream join by state_ttl: {e}")))?
        .data;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((plan, bounded))
}

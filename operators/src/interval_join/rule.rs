//! The interval join's planning rule: a hash join of two streams whose condition bounds the
//! difference of their event times (`ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts + y`),
//! each time a watermarked event time.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use volley_sql::error::{Result, SqlError};
use volley_sql::stream::graph::StreamNode;
use volley_sql::stream::late::LateGate;
use volley_sql::stream::leaf::{EpochSlot, leaves};
use volley_sql::stream::plan::is_stream_join;
use volley_sql::stream::rule::{PlanRule, RuleContext};
use volley_sql::stream::trace::trace_column;

use super::as_of::as_of;
use super::bounds::{interval_bounds, upper_bound};
use super::plan::IntervalJoinPlan;
use crate::two_streams::{JoinSide, JoinTime, SideFrontier, join_port};

/// Plans each join of two streams whose condition bounds the difference of their event times;
/// leaves every other to the rules after it.
#[derive(Debug)]
pub struct IntervalJoinRule;

impl PlanRule for IntervalJoinRule {
    fn claims(&self, node: &dyn ExecutionPlan) -> bool {
        node.downcast_ref::<HashJoinExec>().is_some_and(is_stream_join)
    }

    fn plan(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        cx: &RuleContext<'_>,
    ) -> Result<Option<Box<dyn StreamNode>>> {
        let Some(hash) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(None);
        };
        if !is_stream_join(hash) {
            return Ok(None);
        }
        let (bounds, as_of) = match interval_bounds(hash) {
            Some(bounds) => (bounds, None),
            None => {
                // Bounded above only: an as-of join, when the ranking above keeps the newest.
                let Some(upper) = upper_bound(hash) else {
                    return Ok(None);
                };
                let Some(as_of) = as_of(cx.insert_plan(), hash, upper) else {
                    return Ok(None);
                };
                let bounds = super::IntervalBounds {
                    left_ts: upper.left_ts,
                    right_ts: upper.right_ts,
                    lo: i64::MIN,
                    hi: upper.hi,
                };
                (bounds, Some(as_of))
            }
        };
        crate::two_streams::check_one_join(cx)?;
        let mut plan = plan_interval_join(node, hash, bounds, cx)?;
        plan.as_of = as_of;
        Ok(Some(Box::new(plan)))
    }
}

/// The interval join `join` of two streams' rows (its sides cut).
fn plan_interval_join(
    join: &Arc<dyn ExecutionPlan>,
    hash: &HashJoinExec,
    bounds: super::IntervalBounds,
    cx: &RuleContext<'_>,
) -> Result<IntervalJoinPlan> {
    let at = cx.at();
    let refuse = |message: String| SqlError::Unsupported { at, message };
    if !matches!(
        hash.join_type(),
        datafusion::common::JoinType::Inner | datafusion::common::JoinType::Left
    ) {
        return Err(refuse(format!(
            "an interval join is streamed as an INNER or LEFT join (stream a LEFT JOIN b) only; {} is not yet: write JOIN or LEFT JOIN with the preserved stream first, or join on a shared tumbling window instead",
            hash.join_type()
        )));
    }
    let (left, right) = (Arc::clone(hash.left()), Arc::clone(hash.right()));
    let mut read = leaves(&left);
    read.extend(leaves(&right));
    if cx.ports().iter().any(|p| read.contains(&p.name)) {
        return Err(refuse(
            "an interval join streams source rows; join aggregates on their shared window instead".into(),
        ));
    }
    let display = hash.filter().map_or_else(String::new, |f| {
        volley_sql::sql_text::tidy(&f.expression().to_string())
    });
    let (left, left_unit) = interval_side(left, bounds.left_ts, &display, cx)?;
    let (right, right_unit) = interval_side(right, bounds.right_ts, &display, cx)?;
    if left_unit != right_unit {
        return Err(refuse(format!(
            "the two event times of the interval join {display} have different units ({left_unit:?} and {right_unit:?}); cast one to the other"
        )));
    }
    let name = cx.output_name(crate::two_streams::JOIN);
    let slot = EpochSlot::new();
    let times = [
        (true, bounds.left_ts, JoinTime::Left),
        (false, bounds.right_ts, JoinTime::Right),
    ];
    let port = join_port(hash, &times, None, name.clone(), Arc::clone(&slot));
    Ok(IntervalJoinPlan {
        join: Arc::clone(join),
        unit: left_unit,
        left,
        right,
        display,
        bounds,
        state_ttl: cx.state_ttl(),
        as_of: None,
        post_slot: slot,
        output_name: name,
        port,
    })
}

/// One side of an interval join: its time column must be a watermarked source's event
/// time; rows older than the watermark the other side was last trimmed by leave as late.
fn interval_side(
    plan: Arc<dyn ExecutionPlan>,
    ts: usize,
    display: &str,
    cx: &RuleContext<'_>,
) -> Result<(JoinSide, TimeUnit)> {
    let at = cx.at();
    let refuse = |message: String| SqlError::Unsupported { at, message };
    let ts_type = plan.schema().field(ts).data_type().clone();
    let DataType::Timestamp(unit, _) = ts_type else {
        return Err(refuse(format!(
            "the interval join {display} compares {ts_type}, not event times"
        )));
    };
    let origins = trace_column(&plan, ts).ok_or_else(|| {
        refuse(format!(
            "the interval join {display} must compare the sources' watermarked event-time columns themselves, not computed values"
        ))
    })?;
    let mut sources = Vec::new();
    for origin in &origins {
        let time = cx
            .event_time(
                origin,
                &format!("the interval join {display}"),
                "no row would ever be done with",
            )?
            .ok_or_else(|| {
                refuse(format!(
                    "the interval join {display} must compare source rows' event times, not an aggregate's"
                ))
            })?;
        sources.push(time.table);
    }
    let gate = LateGate::new();
    let split = cx.split_late_identity(&plan, &sources, &gate, &ts_type)?;
    Ok((
        JoinSide {
            plan: cx.partition_rowwise(split)?,
            window_column: ts,
            frontier: SideFrontier::Sources { sources, gate },
        },
        unit,
    ))
}

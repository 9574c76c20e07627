//! Interval joins of two streams' rows (`ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts +
//! y`), each time a watermarked event time.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use volley_sql::error::{Result, SqlError};
use volley_sql::stream::graph::OutputPort;
use volley_sql::stream::late::LateGate;
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::rule::RuleContext;
use volley_sql::stream::trace::trace_column;

use super::bounds::IntervalBounds;
use super::plan::{JoinPlan, JoinSide, SideFrontier};

/// An interval join's two sides (cut) and the bounds between their event times.
pub(super) struct IntervalSides {
    pub(super) left: Arc<dyn ExecutionPlan>,
    pub(super) right: Arc<dyn ExecutionPlan>,
    pub(super) bounds: IntervalBounds,
}

/// The interval join `join` of two streams' rows, its output read through `port` (whose rows
/// go to `slot`).
pub(super) fn plan_interval_join(
    join: &Arc<dyn ExecutionPlan>,
    sides: IntervalSides,
    port: OutputPort,
    slot: Arc<EpochSlot>,
    cx: &RuleContext<'_>,
) -> Result<JoinPlan> {
    let at = cx.at();
    let refuse = |message: String| SqlError::Unsupported { at, message };
    let Some(hash) = join.downcast_ref::<HashJoinExec>() else {
        return Err(SqlError::Internal(
            "an interval join that is not a hash join".into(),
        ));
    };
    if !matches!(
        hash.join_type(),
        datafusion::common::JoinType::Inner | datafusion::common::JoinType::Left
    ) {
        return Err(refuse(format!(
            "an interval join is streamed as an INNER or LEFT join (stream a LEFT JOIN b) only; {} is not yet: write JOIN or LEFT JOIN with the preserved stream first, or join on a shared tumbling window instead",
            hash.join_type()
        )));
    }
    let display = hash.filter().map_or_else(String::new, |f| {
        volley_sql::sql_text::tidy(&f.expression().to_string())
    });
    let bounds = sides.bounds;
    let (left, left_unit) = interval_side(sides.left, bounds.left_ts, &display, cx)?;
    let (right, right_unit) = interval_side(sides.right, bounds.right_ts, &display, cx)?;
    if left_unit != right_unit {
        return Err(refuse(format!(
            "the two event times of the interval join {display} have different units ({left_unit:?} and {right_unit:?}); cast one to the other"
        )));
    }
    Ok(JoinPlan {
        join: Arc::clone(join),
        unit: left_unit,
        left,
        right,
        width: 0,
        display,
        post_slot: slot,
        output_name: port.name.clone(),
        interval: Some(bounds),
        state_ttl: cx.state_ttl(),
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

//! Interval joins of two streams' rows.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;

use crate::stream::late::LateGate;
use crate::stream::trace::trace_column;

use crate::error::{Result, SqlError, StatementRef};
use crate::pipeline::InsertDecl;

use super::StreamPlanner;
use super::{cut::*, stream_join::*};
use crate::stream::aggregate_plan::AggregatePlan;

impl StreamPlanner {
    /// An interval join (`ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts + y`) of two
    /// streams' rows, each time a watermarked event time.
    #[expect(clippy::too_many_arguments)]
    pub(super) fn plan_interval_join(
        &self,
        join: Arc<dyn ExecutionPlan>,
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        bounds: crate::stream::interval::IntervalBounds,
        stages: Vec<AggregatePlan>,
        output: JoinOutput,
        insert: &InsertDecl,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<crate::stream::join::JoinPlan> {
        let at = insert.at;
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
        if !stages.is_empty() {
            return Err(refuse(
                "an interval join streams source rows; join aggregates on their shared window instead".into(),
            ));
        }
        let display = hash.filter().map_or_else(String::new, |f| {
            crate::sql_text::tidy(&f.expression().to_string())
        });
        let left_side = self.interval_side(left, bounds.left_ts, &display, at)?;
        let right_side = self.interval_side(right, bounds.right_ts, &display, at)?;
        let unit = |side: &(crate::stream::join::JoinSide, arrow::datatypes::TimeUnit)| side.1;
        if unit(&left_side) != unit(&right_side) {
            return Err(refuse(format!(
                "the two event times of the interval join {display} have different units ({:?} and {:?}); cast one to the other",
                unit(&left_side),
                unit(&right_side)
            )));
        }
        Ok(crate::stream::join::JoinPlan {
            join,
            unit: left_side.1,
            left: left_side.0,
            right: right_side.0,
            width: 0,
            display,
            inner: stages,
            post_slot: output.slot,
            output_name: output.port.name.clone(),
            post: output.post,
            interval: Some(bounds),
            state_ttl,
            outer: output.outer,
            port: output.port,
        })
    }

    /// One side of an interval join: its time column must be a watermarked source's event
    /// time; rows older than the watermark the other side was last trimmed by leave as late.
    pub(super) fn interval_side(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        ts: usize,
        display: &str,
        at: StatementRef,
    ) -> Result<(crate::stream::join::JoinSide, arrow::datatypes::TimeUnit)> {
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
            let time = self
                .event_time(
                    origin,
                    &format!("the interval join {display}"),
                    "no row would ever be done with",
                    at,
                )?
                .ok_or_else(|| {
                    refuse(format!(
                        "the interval join {display} must compare source rows' event times, not an aggregate's"
                    ))
                })?;
            sources.push(time.table);
        }
        let gate = LateGate::new();
        let split = self.split_late_identity(&plan, &sources, &gate, &ts_type)?;
        Ok((
            crate::stream::join::JoinSide {
                plan: partition_rowwise(split, self.workers)?,
                window_column: ts,
                frontier: crate::stream::join::SideFrontier::Sources { sources, gate },
            },
            unit,
        ))
    }
}

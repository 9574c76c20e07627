//! A Top-N whose PARTITION BY holds an event time (`PARTITION BY a.id, a.ts` over an interval
//! join's rows, `PARTITION BY user_id, ts` over a source): a partition's rows all share that
//! time, so once the watermark passes it no row of the partition can still come. Its ranks
//! are then final: they are appended once and the partition is forgotten, so the state holds
//! N rows per partition whose time the watermark has not passed.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::physical_plan::ExecutionPlan;
use volley_sql::error::Result;
use volley_sql::stream::graph::{Emit, port};
use volley_sql::stream::late::LateGate;
use volley_sql::stream::operator::min_watermark;
use volley_sql::stream::rule::RuleContext;
use volley_sql::stream::trace::trace_column;

use crate::two_streams::SideFrontier;

/// The event time a Top-N's partitions close by.
#[derive(Debug, Clone)]
pub struct Closing {
    /// The PARTITION BY column (of the input, and of the output) that is an event time.
    pub column: usize,
    /// Its name, for `explain`.
    pub name: String,
    /// Where its watermark comes from.
    pub frontier: SideFrontier,
    /// Nanoseconds per unit of the column.
    pub per: i64,
}

impl Closing {
    /// The watermark in the column's unit (`None` while unknown): rows of a time before it
    /// never come.
    pub fn mark(&self, watermarks: &HashMap<String, Option<i64>>) -> Option<i64> {
        let wm = match &self.frontier {
            SideFrontier::Sources { sources, .. } => min_watermark(sources, watermarks)?,
            SideFrontier::Aggregate { input } => watermarks.get(input).copied().flatten()?,
        };
        Some(if wm == i64::MAX {
            i64::MAX
        } else {
            wm.div_euclid(self.per)
        })
    }

    /// Where its watermark comes from, for `explain`.
    pub fn described(&self) -> String {
        match &self.frontier {
            SideFrontier::Sources { sources, .. } => {
                format!("the watermark of {}", sources.join(", "))
            }
            SideFrontier::Aggregate { input } => format!("the watermark of {input}"),
        }
    }
}

/// The first of `partition_by` (columns of `input`) that is an event time of what `input`
/// reads (a watermarked source column, or an appended event time of an operator below), and
/// the input to read (a source's late rows split off).
///
/// # Errors
/// Failures splitting off late rows.
pub(super) fn closing_time(
    input: &Arc<dyn ExecutionPlan>,
    partition_by: &[usize],
    cx: &RuleContext<'_>,
) -> Result<Option<(Closing, Arc<dyn ExecutionPlan>)>> {
    let ports = cx.ports();
    for &column in partition_by {
        let schema = input.schema();
        let field = schema.field(column);
        let DataType::Timestamp(unit, _) = field.data_type() else {
            continue;
        };
        let per = match unit {
            arrow::datatypes::TimeUnit::Second => 1_000_000_000,
            arrow::datatypes::TimeUnit::Millisecond => 1_000_000,
            arrow::datatypes::TimeUnit::Microsecond => 1_000,
            arrow::datatypes::TimeUnit::Nanosecond => 1,
        };
        let Some(origins) = trace_column(input, column) else {
            continue;
        };
        let Some(first) = origins.first() else {
            continue;
        };
        let closing = |frontier| Closing {
            column,
            name: field.name().clone(),
            frontier,
            per,
        };
        if let Some(p) = port(&ports, &first.input) {
            if p.emit != Emit::Append {
                continue;
            }
            let times: Option<Vec<_>> = origins
                .iter()
                .map(|o| p.time(o.column).filter(|_| o.input == p.name))
                .collect();
            let Some(time) = times.and_then(|t| t.first().copied().cloned()) else {
                continue;
            };
            let frontier = SideFrontier::Aggregate {
                input: time.watermark,
            };
            return Ok(Some((closing(frontier), Arc::clone(input))));
        }
        let mut sources = Vec::new();
        let mut all_timed = true;
        for origin in &origins {
            let timed = cx.source(&origin.input).is_some_and(|s| {
                let named = s.schema.fields().get(origin.column).map(|f| f.name());
                s.watermark.as_ref().map(|w| &w.column) == named
            });
            if !timed {
                all_timed = false;
                break;
            }
            if !sources.contains(&origin.input) {
                sources.push(origin.input.clone());
            }
        }
        if !all_timed {
            continue;
        }
        let gate = LateGate::new();
        let split = cx.split_late_identity(input, &sources, &gate, field.data_type())?;
        let frontier = SideFrontier::Sources { sources, gate };
        return Ok(Some((closing(frontier), split)));
    }
    Ok(None)
}

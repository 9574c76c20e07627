//! Windowed joins of two streams: both sides in the same tumbling window (each side grouped
//! by it, or its rows bucketed by it) and joined on the window, and on keys.
//!
//! ```text
//!   post:  Projection / Filter  ◀── EpochSourceExec(<target>#join)
//!   join:  HashJoinExec(ON a.w = b.w AND a.k = b.k …) run over the rows of closed windows
//!   sides: left plan ─▶ rows by window      right plan ─▶ rows by window
//!          (stateless segments over the sources, or over windowed aggregates' rows)
//! ```
//!
//! A side's rows are held by window until both sides are complete for it: a side that
//! buckets source rows is complete for a window once its sources' watermark passes the
//! window's end; a side that is a windowed aggregate, once that aggregate has emitted it.
//! The window is then joined once, with every join type's batch meaning, and its rows are
//! dropped. Rows that arrive for a window already joined are late and go to dead letters.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::aggregate_plan::AggregatePlan;
use super::late::LateGate;
use super::leaf::EpochSlot;
use super::trace::{column_of, trace_column};
use super::window::{BucketSize, as_bucket, nanos_per_unit};

/// Where a side's rows of a window are known to be complete.
#[derive(Debug, Clone)]
pub enum SideFrontier {
    /// Source rows bucketed into the window: complete once the sources' watermark (the
    /// minimum over `sources`) passes the window's end. Later rows go through `gate`.
    Sources {
        /// Source tables.
        sources: Vec<String>,
        /// Where the side's late rows leave.
        gate: Arc<LateGate>,
    },
    /// A windowed aggregate's rows: complete once it has emitted the window (its output
    /// watermark, under the aggregate's output name).
    Aggregate {
        /// The aggregate's output name.
        input: String,
    },
}

/// One side of a windowed join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// The side's rows each epoch (a stateless segment).
    pub plan: Arc<dyn ExecutionPlan>,
    /// The window-start column of the side's rows.
    pub window_column: usize,
    /// When its windows are complete.
    pub frontier: SideFrontier,
}

/// A windowed join of two streams, its inputs and what reads its output.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    /// The join as DataFusion planned it; run over the closed windows' rows of both sides.
    pub join: Arc<dyn ExecutionPlan>,
    /// Build (left) side.
    pub left: JoinSide,
    /// Probe (right) side.
    pub right: JoinSide,
    /// The window's width, in `unit`s.
    pub width: i64,
    /// Unit of the window columns.
    pub unit: TimeUnit,
    /// The window equality, for display.
    pub display: String,
    /// Windowed aggregates feeding a side, innermost first.
    pub inner: Vec<AggregatePlan>,
    /// Where joined rows go for `post`.
    pub post_slot: Arc<EpochSlot>,
    /// The name of the leaf reading `post_slot`.
    pub output_name: String,
    /// The segment above the join.
    pub post: Arc<dyn ExecutionPlan>,
    /// An interval join instead of a windowed one: the sides' `window_column`s are then their
    /// event times, and `width` is 0.
    pub interval: Option<super::interval::IntervalBounds>,
    /// The sink's `state_ttl` that bounded an otherwise unbounded join into an interval join
    /// of rows at most that far apart in event time (so the result may differ from batch).
    pub state_ttl: Option<std::time::Duration>,
    /// Windowed aggregates over the join's rows, innermost first (the first reads the join's
    /// output); `post` then reads the last one's.
    pub outer: Vec<AggregatePlan>,
    /// The time of the join's rows the first of `outer` windows by.
    pub outer_time: Option<JoinTime>,
}

impl JoinPlan {
    /// Nanoseconds per `unit`.
    pub fn nanos_per_unit(&self) -> i64 {
        nanos_per_unit(self.unit)
    }
}

/// What a side's column is as a window.
#[derive(Debug, Clone)]
pub(super) enum SideWindow {
    /// A windowed aggregate's window column.
    Aggregate {
        /// Its output name.
        input: String,
        /// Window width in `unit`s.
        width: i64,
        /// Unit.
        unit: TimeUnit,
    },
    /// A bucket of a source's event time, computed in a projection of the side.
    Bucket {
        /// The bucket expression (over the projection's input).
        expr: Arc<dyn PhysicalExpr>,
        /// The type of its time argument there.
        ts_type: DataType,
        /// Where the time comes from.
        origins: Vec<super::trace::ColumnOrigin>,
        /// Window width in `unit`s.
        width: i64,
        /// Unit.
        unit: TimeUnit,
    },
}

impl SideWindow {
    /// Width and unit.
    pub(super) fn size(&self) -> (i64, TimeUnit) {
        match self {
            SideWindow::Aggregate { width, unit, .. } | SideWindow::Bucket { width, unit, .. } => {
                (*width, *unit)
            }
        }
    }
}

/// Output column `column` of `side` as a window, if it is one.
pub(super) fn side_window(
    side: &Arc<dyn ExecutionPlan>,
    column: usize,
    inner: &[AggregatePlan],
) -> Option<SideWindow> {
    if let Some(origins) = trace_column(side, column) {
        let first = origins.first()?;
        let stage = inner.iter().find(|s| s.output_name == first.input)?;
        let window = stage.window.as_ref()?;
        // A hop window's rows are per window start, one every slide.
        let width = window.step()?;
        let same = origins
            .iter()
            .all(|o| o.input == first.input && o.column == window.group_index);
        return (same && window.lateness == 0).then(|| SideWindow::Aggregate {
            input: stage.output_name.clone(),
            width,
            unit: window.unit,
        });
    }
    bucket_of(side, column)
}

/// The bucket a side computes as its column `column`.
fn bucket_of(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<SideWindow> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        if let Some(c) = column_of(expr) {
            return bucket_of(projection.input(), c);
        }
        let bucket = as_bucket(expr).ok().flatten()?;
        let input = projection.input();
        let ts = column_of(&bucket.ts)?;
        let ts_type = input.schema().field(ts).data_type().clone();
        let DataType::Timestamp(unit, _) = expr.data_type(input.schema().as_ref()).ok()? else {
            return None;
        };
        let BucketSize::Nanos(nanos) = bucket.size else {
            return None;
        };
        let per = nanos_per_unit(unit);
        if nanos % per != 0 {
            return None;
        }
        let origins = trace_column(input, ts)?;
        return Some(SideWindow::Bucket {
            expr: Arc::clone(expr),
            ts_type,
            origins,
            width: nanos / per,
            unit,
        });
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => *p.get(column)?,
            None => column,
        };
        return bucket_of(filter.input(), column);
    }
    if super::capability::is_coalesce_batches(plan.as_ref())
        || matches!(plan.name(), "RepartitionExec" | "CooperativeExec")
    {
        return bucket_of(plan.children().first()?, column);
    }
    None
}

/// Which time of a join's rows an output column is, for an aggregate windowed over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinTime {
    /// A windowed join's window column: the join's rows of a window are final once it is
    /// joined.
    Window,
    /// An interval join's left event time.
    Left,
    /// An interval join's right event time.
    Right,
}

/// The output columns of a join of two streams that are times an aggregate above it can be
/// windowed by, and the leaf that reads its rows.
#[derive(Debug)]
pub(super) struct JoinTimes {
    /// The name of the leaf reading the join's rows.
    pub(super) name: String,
    /// Output column → which time it is.
    pub(super) columns: Vec<(usize, JoinTime)>,
    /// A windowed join's window width and unit.
    pub(super) window: Option<(i64, TimeUnit)>,
    /// The time the aggregate over the join windows by, once planned.
    pub(super) used: std::cell::Cell<Option<JoinTime>>,
    /// Whether the join is bounded by a shared window or an interval.
    bounded: bool,
}

impl JoinTimes {
    /// Which time output column `column` is.
    pub(super) fn time_of(&self, column: usize) -> Option<JoinTime> {
        self.columns
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, t)| *t)
    }

    /// Whether the join is bounded (windowed or interval).
    pub(super) fn bounded(&self) -> bool {
        self.bounded
    }
}

/// The time columns of `join`'s output (named `name`): a windowed join's window columns, an
/// interval join's event times. Empty for a join bounded by neither.
pub(super) fn join_times(
    join: &datafusion::physical_plan::joins::HashJoinExec,
    stages: &[AggregatePlan],
    name: String,
) -> JoinTimes {
    let (left, right) = (join.left(), join.right());
    let mut inputs: Vec<(bool, usize, JoinTime)> = Vec::new();
    let mut window = None;
    for (l, r) in join.on() {
        let (Some(l), Some(r)) = (column_of(l), column_of(r)) else {
            continue;
        };
        if let (Some(a), Some(b)) = (side_window(left, l, stages), side_window(right, r, stages)) {
            if a.size() == b.size() {
                inputs.push((true, l, JoinTime::Window));
                inputs.push((false, r, JoinTime::Window));
                window = Some(a.size());
            }
            break;
        }
    }
    if inputs.is_empty()
        && let Some(bounds) = super::interval::interval_bounds(join)
    {
        inputs.push((true, bounds.left_ts, JoinTime::Left));
        inputs.push((false, bounds.right_ts, JoinTime::Right));
    }
    let columns: Vec<(usize, JoinTime)> = (0..join.schema().fields().len())
        .filter_map(|i| {
            let (input, c) = super::trace::join_input_column(join, i)?;
            let is_left = Arc::ptr_eq(input, left);
            inputs
                .iter()
                .find(|(side, column, _)| *side == is_left && *column == c)
                .map(|(_, _, t)| (i, *t))
        })
        .collect();
    JoinTimes {
        name,
        columns,
        window,
        used: std::cell::Cell::new(None),
        bounded: !inputs.is_empty(),
    }
}

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

use std::fmt::Write;

use datafusion::execution::TaskContext;
use volley_sql::sql_text;
use volley_sql::stream::graph::{Emit, ExplainContext, OutputPort, PortTime, StreamNode};
use volley_sql::stream::late::LateGate;
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::operator::StreamOperator;
use volley_sql::stream::order::Emitted;
use volley_sql::stream::render::{indent_by, render};
use volley_sql::stream::trace::{ColumnOrigin, column_of, trace_column};
use volley_sql::stream::window::{BucketSize, as_bucket, nanos_per_unit};

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
    /// Where joined rows go for the segment above.
    pub post_slot: Arc<EpochSlot>,
    /// The name of the leaf reading `post_slot`.
    pub output_name: String,
    /// An interval join instead of a windowed one: the sides' `window_column`s are then their
    /// event times, and `width` is 0.
    pub interval: Option<super::bounds::IntervalBounds>,
    /// The sink's `state_ttl` that bounded an otherwise unbounded join into an interval join
    /// of rows at most that far apart in event time (so the result may differ from batch).
    pub state_ttl: Option<std::time::Duration>,
    /// Its output as the aggregate over it reads it.
    pub port: OutputPort,
}

impl JoinPlan {
    /// Nanoseconds per `unit`.
    pub fn nanos_per_unit(&self) -> i64 {
        nanos_per_unit(self.unit)
    }

    /// The times of its rows whose watermarks it publishes: a windowed join's window, an
    /// interval join's left and right event times.
    pub fn times(&self) -> &'static [JoinTime] {
        if self.interval.is_some() {
            &[JoinTime::Left, JoinTime::Right]
        } else {
            &[JoinTime::Window]
        }
    }
}

impl StreamNode for JoinPlan {
    fn kind(&self) -> &'static str {
        "join"
    }

    fn port(&self) -> OutputPort {
        self.port.clone()
    }

    fn inputs(&self) -> Vec<String> {
        let mut read = volley_sql::stream::leaf::leaves(&self.left.plan);
        for input in volley_sql::stream::leaf::leaves(&self.right.plan) {
            if !read.contains(&input) {
                read.push(input);
            }
        }
        read
    }

    fn confined_to(&self, _table: &str, _column: &str) -> Result<bool, String> {
        Err("joins two streams, which group mode does not run yet: rows of one key may be read by different processes".to_string())
    }

    fn explain(&self, ctx: &ExplainContext<'_>) -> String {
        explain_node(self, ctx)
    }

    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator> {
        Box::new(super::JoinState::new(self.clone(), task_ctx))
    }

    fn boxed_clone(&self) -> Box<dyn StreamNode> {
        Box::new(self.clone())
    }

    fn emitted(&self) -> Emitted {
        match self.interval {
            Some(_) => Emitted::Rows,
            None => Emitted::Windows,
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.state_ttl
            .map(|ttl| format!("the join of two streams joins only rows at most {} apart in event time (the sink's 'state_ttl'), so pairs further apart are missing and the result may differ from batch", sql_text::duration(ttl)))
            .into_iter()
            .collect()
    }

    fn bounded_by_ttl(&self) -> bool {
        self.state_ttl.is_some()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The key the watermark of the join's `time` is published under, for the join read as `name`.
pub fn watermark_key(name: &str, time: JoinTime) -> String {
    match time {
        JoinTime::Window => name.to_string(),
        JoinTime::Left => format!("{name}.left"),
        JoinTime::Right => format!("{name}.right"),
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
        origins: Vec<ColumnOrigin>,
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

/// Output column `column` of `side` as a window, if it is one: a window column of the node
/// below (one of `ports`), or a bucket of a source's event time.
pub(super) fn side_window(
    side: &Arc<dyn ExecutionPlan>,
    column: usize,
    ports: &[OutputPort],
) -> Option<SideWindow> {
    if let Some(origins) = trace_column(side, column) {
        let first = origins.first()?;
        let time = volley_sql::stream::graph::port(ports, &first.input)?.time(first.column)?;
        // A hop window's rows are per window start, one every slide.
        let (width, unit) = time.step?;
        let same = origins
            .iter()
            .all(|o| o.input == first.input && o.column == first.column);
        return same.then(|| SideWindow::Aggregate {
            input: time.watermark.clone(),
            width,
            unit,
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
    if volley_sql::stream::capability::is_coalesce_batches(plan.as_ref())
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

impl JoinTime {
    /// What it is, for `explain`.
    pub fn describe(self) -> &'static str {
        match self {
            JoinTime::Window => "the join's window",
            JoinTime::Left => "the left side's event time",
            JoinTime::Right => "the right side's event time",
        }
    }

    /// What its watermark is, for `explain`.
    pub fn watermark_means(self) -> &'static str {
        match self {
            JoinTime::Window => "the start of the earliest window the join has not joined",
            JoinTime::Left => {
                "the earliest left event time the join can still emit: the older of the left watermark and where its held left rows were trimmed to"
            }
            JoinTime::Right => {
                "the earliest right event time the join can still emit: the older of the right watermark and where its held right rows were trimmed to"
            }
        }
    }
}

/// The port of `join`'s output (read as `name`): a windowed join's window columns, an interval
/// join's event times, each with its own watermark.
pub(super) fn join_port(
    join: &datafusion::physical_plan::joins::HashJoinExec,
    ports: &[OutputPort],
    name: String,
    slot: Arc<EpochSlot>,
) -> OutputPort {
    let (left, right) = (join.left(), join.right());
    let mut inputs: Vec<(bool, usize, JoinTime)> = Vec::new();
    let mut window = None;
    for (l, r) in join.on() {
        let (Some(l), Some(r)) = (column_of(l), column_of(r)) else {
            continue;
        };
        if let (Some(a), Some(b)) = (side_window(left, l, ports), side_window(right, r, ports)) {
            if a.size() == b.size() {
                inputs.push((true, l, JoinTime::Window));
                inputs.push((false, r, JoinTime::Window));
                window = Some(a.size());
            }
            break;
        }
    }
    if inputs.is_empty()
        && let Some(bounds) = super::bounds::interval_bounds(join)
    {
        inputs.push((true, bounds.left_ts, JoinTime::Left));
        inputs.push((false, bounds.right_ts, JoinTime::Right));
    }
    let times = (0..join.schema().fields().len())
        .filter_map(|i| {
            let (input, c) = volley_sql::stream::trace::join_input_column(join, i)?;
            let is_left = Arc::ptr_eq(input, left);
            let (_, _, time) = inputs
                .iter()
                .find(|(side, column, _)| *side == is_left && *column == c)?;
            Some(PortTime {
                column: i,
                step: match time {
                    JoinTime::Window => window,
                    JoinTime::Left | JoinTime::Right => None,
                },
                watermark: watermark_key(&name, *time),
                what: time.describe().to_string(),
                watermark_means: time.watermark_means().to_string(),
            })
        })
        .collect();
    OutputPort {
        name,
        schema: join.schema(),
        slot,
        times,
        emit: Emit::Append,
        described: "a join of two streams".to_string(),
        time_rule: "the time the join bounds: the window column of a windowed join, or either side's event time of an interval join, as the join outputs it".to_string(),
        key: Vec::new(),
        needs_window: Some("is streamed when it is windowed by the join's rows' time: the window column of a windowed join, or one side's event time of an interval join (GROUP BY date_bin(INTERVAL ..., a.event_time), ...), so each window closes as the join's rows for it are final; or write the joined rows to a table and aggregate it in `volley batch`".to_string()),
    }
}

/// A join of two streams: its kind, each side and when it is complete, and the join itself.
fn explain_node(join: &JoinPlan, ctx: &ExplainContext<'_>) -> String {
    let mut text = String::new();
    let out = &mut text;
    let watermark_of = ctx.watermark_of;
    if let Some(bounds) = &join.interval {
        let _ = writeln!(
            out,
            "  kind: interval join of two streams on {} (right time - left time within [{}, {}]); new rows of each side meet the held rows of the other, a row is held until the other side's watermark says no partner can still come, and a row older than its own side's watermark goes to dead letters",
            join.display,
            sql_text::interval(0, 0, bounds.lo),
            sql_text::interval(0, 0, bounds.hi)
        );
        if let Some(ttl) = join.state_ttl {
            let _ = writeln!(
                out,
                "  state_ttl: {} of event time; the join has neither a shared window nor an interval, so only rows at most that far apart are joined, and results may differ from batch",
                sql_text::duration(ttl)
            );
        }
    } else {
        let _ = writeln!(
            out,
            "  kind: windowed join of two streams on {} ({} wide); each side's rows are held by window until both sides are complete for it, then the window is joined once and its rows dropped; a row of a window already joined goes to dead letters",
            join.display,
            sql_text::span(join.width, join.unit)
        );
    }
    for (name, side) in [("left (build)", &join.left), ("right (probe)", &join.right)] {
        let complete = match &side.frontier {
            SideFrontier::Sources { sources, .. } => {
                let marks: Vec<String> = sources
                    .iter()
                    .map(|s| format!("{s}: {}", watermark_of(s).unwrap_or_default()))
                    .collect();
                if join.interval.is_some() {
                    format!("by the watermark ({})", marks.join("; "))
                } else {
                    format!("once the watermark passes its end ({})", marks.join("; "))
                }
            }
            SideFrontier::Aggregate { input } => {
                format!("once {input} has emitted it")
            }
        };
        let what = if join.interval.is_some() {
            "held"
        } else {
            "complete for a window"
        };
        let _ = writeln!(out, "  {name} side, {what} {complete}:");
        indent_by(out, &render(&side.plan), "");
    }
    let _ = writeln!(
        out,
        "  join (DataFusion's, over the rows each epoch brings together):"
    );
    indent_by(out, &render(&join.join), "");
    text
}

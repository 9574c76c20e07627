//! What the joins of two streams share: their sides (a stateless segment each, and when its
//! rows are complete), the rows they hold, the times their output publishes watermarks for,
//! running DataFusion's own join over held rows, and how `explain` shows the sides.

mod held;

use std::fmt::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::{ExecutionPlan, collect};
use volley_sql::error::{Result as PlanResult, SqlError};
use volley_sql::stream::graph::{Emit, OutputPort, PortTime};
use volley_sql::stream::late::{LateGate, LateRows};
use volley_sql::stream::leaf::EpochSlot;
use volley_sql::stream::operator::{OperatorError, Result};
use volley_sql::stream::render::{indent_by, render};
use volley_sql::stream::rule::RuleContext;

pub(crate) use self::held::Held;

/// The kind every join of two streams reports (its checkpoint id and shape order).
pub const JOIN: &str = "join";

/// Why a join of two streams cannot run in group mode.
pub const NOT_IN_GROUP_MODE: &str = "joins two streams, which group mode does not run yet: rows of one key may be read by different processes";

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

/// The key the watermark of the join's `time` is published under, for the join read as `name`.
pub fn watermark_key(name: &str, time: JoinTime) -> String {
    match time {
        JoinTime::Window => name.to_string(),
        JoinTime::Left => format!("{name}.left"),
        JoinTime::Right => format!("{name}.right"),
    }
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

/// The port of `join`'s output (read as `name`): each output column that is one of `times`
/// (`(left side?, column of that side, which time)`) is an event time of the join's rows,
/// published under its own key; `window` is a windowed join's width and unit.
pub(crate) fn join_port(
    join: &HashJoinExec,
    times: &[(bool, usize, JoinTime)],
    window: Option<(i64, arrow::datatypes::TimeUnit)>,
    name: String,
    slot: Arc<EpochSlot>,
) -> OutputPort {
    let left = join.left();
    let port_times = (0..join.schema().fields().len())
        .filter_map(|i| {
            let (input, c) = volley_sql::stream::trace::join_input_column(join, i)?;
            let is_left = Arc::ptr_eq(input, left);
            let (_, _, time) = times
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
        times: port_times,
        emit: Emit::Append,
        described: "a join of two streams".to_string(),
        time_rule: "the time the join bounds: the window column of a windowed join, or either side's event time of an interval join, as the join outputs it".to_string(),
        key: Vec::new(),
        needs_window: Some("is streamed when it is windowed by the join's rows' time: the window column of a windowed join, or one side's event time of an interval join (GROUP BY date_bin(INTERVAL ..., a.event_time), ...), so each window closes as the join's rows for it are final; or write the joined rows to a table and aggregate it in `volley batch`".to_string()),
    }
}

/// Refuses a second join of two streams in one INSERT.
///
/// # Errors
/// The INSERT already has one.
pub(crate) fn check_one_join(cx: &RuleContext<'_>) -> PlanResult<()> {
    if cx.nodes().iter().any(|n| n.kind() == JOIN) {
        return Err(SqlError::Unsupported {
            at: cx.at(),
            message: "a streaming INSERT may join two streams once: join the result of one join with a third stream in another pipeline, or in `volley batch`".into(),
        });
    }
    Ok(())
}

/// The inputs both sides read, each once.
pub(crate) fn inputs(left: &JoinSide, right: &JoinSide) -> Vec<String> {
    let mut read = volley_sql::stream::leaf::leaves(&left.plan);
    for input in volley_sql::stream::leaf::leaves(&right.plan) {
        if !read.contains(&input) {
            read.push(input);
        }
    }
    read
}

/// This epoch's rows of `side` (its segment over the slots).
///
/// # Errors
/// Failures executing the segment.
pub(crate) async fn side_rows(
    side: &JoinSide,
    task_ctx: &Arc<TaskContext>,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let parts = datafusion::physical_plan::collect_partitioned(
        Arc::clone(&side.plan),
        Arc::clone(task_ctx),
    )
    .await
    .map_err(OperatorError::exec(what))?;
    Ok(parts.into_iter().flatten().collect())
}

/// `join` (DataFusion's, as planned) over these rows of each side, given its own fresh hash
/// table.
///
/// # Errors
/// Failures executing the join.
pub(crate) async fn run_join(
    join: &Arc<dyn ExecutionPlan>,
    (left, left_schema): (Vec<RecordBatch>, SchemaRef),
    (right, right_schema): (Vec<RecordBatch>, SchemaRef),
    task_ctx: &Arc<TaskContext>,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let left = MemorySourceConfig::try_new_exec(&[left], left_schema, None)
        .map_err(OperatorError::exec(what))?;
    let right = MemorySourceConfig::try_new_exec(&[right], right_schema, None)
        .map_err(OperatorError::exec(what))?;
    let left: Arc<dyn ExecutionPlan> = left;
    let right: Arc<dyn ExecutionPlan> = right;
    // A hash join keeps the table it built across runs: each run needs its own.
    let join = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
        Arc::clone(join),
        vec![left, right],
    )
    .and_then(ExecutionPlan::reset_state)
    .map_err(OperatorError::exec(what))?;
    let rows = collect(join, Arc::clone(task_ctx))
        .await
        .map_err(OperatorError::exec(what))?;
    Ok(rows.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// The source rows each of `sides` found late this epoch.
pub(crate) fn take_late<'a>(sides: impl IntoIterator<Item = &'a JoinSide>) -> Vec<LateRows> {
    let mut late = Vec::new();
    for side in sides {
        if let SideFrontier::Sources { gate, .. } = &side.frontier {
            late.extend(gate.take_late());
        }
    }
    late
}

/// Gives every lookup join in both sides' segments over `table` a fresh hash table.
///
/// # Errors
/// DataFusion failures rebuilding a join.
pub(crate) fn reset_lookup(sides: [&mut JoinSide; 2], table: &str) -> Result<()> {
    for side in sides {
        side.plan = volley_sql::stream::lookup::reset_lookup_joins(&side.plan, table)?;
    }
    Ok(())
}

/// Both sides' state, as text: `left [a: Int64, …]; right […]`.
pub(crate) fn sides_shape(left: &JoinSide, right: &JoinSide) -> String {
    let columns = |schema: SchemaRef| {
        schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "left [{}]; right [{}]",
        columns(left.plan.schema()),
        columns(right.plan.schema())
    )
}

/// Each side (what it holds, until when: `held`, `complete for a window`; how a side of
/// source rows is complete: `by the watermark`, `once the watermark passes its end`) and the
/// join itself, for `explain`.
pub(crate) fn explain_sides(
    out: &mut String,
    [left, right]: [&JoinSide; 2],
    (what, by_sources): (&str, &str),
    join: &Arc<dyn ExecutionPlan>,
    watermark_of: &dyn Fn(&str) -> Option<String>,
) {
    for (name, side) in [("left (build)", left), ("right (probe)", right)] {
        let complete = match &side.frontier {
            SideFrontier::Sources { sources, .. } => {
                let marks: Vec<String> = sources
                    .iter()
                    .map(|s| format!("{s}: {}", watermark_of(s).unwrap_or_default()))
                    .collect();
                format!("{by_sources} ({})", marks.join("; "))
            }
            SideFrontier::Aggregate { input } => {
                format!("once {input} has emitted it")
            }
        };
        let _ = writeln!(out, "  {name} side, {what} {complete}:");
        indent_by(out, &render(&side.plan), "");
    }
    let _ = writeln!(
        out,
        "  join (DataFusion's, over the rows each epoch brings together):"
    );
    indent_by(out, &render(join), "");
}

//! Session windows in the plain SQL any engine runs (Nexmark q11's rewrite):
//!
//! ```sql
//! SELECT k, count(*), min(ts), max(ts) FROM (
//!   SELECT k, ts, SUM(new_session) OVER (PARTITION BY k ORDER BY ts) AS session_id
//!   FROM (SELECT k, ts, CASE WHEN ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts)
//!                               <= INTERVAL '10 seconds' THEN 0 ELSE 1 END AS new_session
//!         FROM s) AS flagged) AS sessions
//! GROUP BY k, session_id
//! ```
//!
//! The OVER windows stream the gap flag and the running sum, each row once final, in event
//! time order per key. A key's next row joins its current session only if it is at most the
//! gap after the session's last row; every row still to come is at or after the OVER window's
//! watermark. So once that watermark is more than the gap past a session's last row, the
//! session is complete: its row is appended and its state dropped. The aggregate stamps each
//! group with the watermark of the epoch that last touched it (at or after its last row) and
//! closes it once the watermark passes the stamp plus the gap.
//!
//! Recognised here from the INSERT's plan: a GROUP BY key that is a running `SUM` over an
//! OVER window's flag, the flag a `CASE` on `ts - LAG(ts)` against a constant interval (with
//! the same PARTITION BY and event time), that is 0 within a session and more than 0 when a
//! new one starts (a row with a NULL time starts one too).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, IsNullExpr, Literal, TryCastExpr,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::windows::WindowExpr;
use volley_sql::stream::graph::OutputPort;
use volley_sql::stream::leaf::leaves;
use volley_sql::stream::trace::{ColumnOrigin, moves_rows, trace_column};
use volley_sql::stream::window_op::window_parts;

use crate::over::{Kind, Start, classify};

/// A session window among an aggregate's group keys.
#[derive(Debug, Clone)]
pub struct Session {
    /// The largest gap between two rows of one session, nanoseconds.
    pub gap: i64,
    /// The session id's name among the group columns, for `explain`.
    pub id: String,
    /// The key the watermark of the OVER window's event time is published under.
    pub watermark: String,
    /// The OVER window's output name, for `explain`.
    pub over: String,
}

/// The session window among `agg`'s group keys (the aggregate offered, reading `ports`), when
/// one of them is a session id over an OVER window's output; an error naming why a session
/// id found cannot stream.
pub(super) fn session_of(
    agg: &AggregateExec,
    root: &Arc<dyn ExecutionPlan>,
    ports: &[OutputPort],
) -> Option<Result<Session, String>> {
    let read = leaves(agg.input());
    let port = ports
        .iter()
        .find(|p| read.contains(&p.name) && p.described == "an OVER window")?;
    let watermark = port.times.first()?.watermark.clone();
    let names: Vec<&str> = agg
        .group_expr()
        .expr()
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    let original = find_aggregate(root, &names)?;
    for (expr, name) in original.group_expr().expr() {
        let Some(column) = expr.downcast_ref::<Column>() else {
            continue;
        };
        if let Some(gap) = session_gap(original.input(), column.index()) {
            return Some(gap.map(|gap| Session {
                gap,
                id: name.clone(),
                watermark,
                over: port.name.clone(),
            }));
        }
    }
    None
}

/// The first aggregate in `root` grouping by columns named `names` (its first phase, whose
/// input is the uncut plan).
fn find_aggregate<'a>(root: &'a Arc<dyn ExecutionPlan>, names: &[&str]) -> Option<&'a AggregateExec> {
    if let Some(agg) = root.downcast_ref::<AggregateExec>() {
        let same = agg
            .group_expr()
            .expr()
            .iter()
            .map(|(_, n)| n.as_str())
            .eq(names.iter().copied());
        if same
            && matches!(
                agg.mode(),
                AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
            )
        {
            return Some(agg);
        }
    }
    root.children()
        .into_iter()
        .find_map(|child| find_aggregate(child, names))
}

/// The gap of the session id that column `column` of `plan` is, if it is one; an error for
/// one that cannot close its sessions.
fn session_gap(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<Result<i64, String>> {
    let (window, index) = to_window(plan, column)?;
    let (exprs, input) = window_parts(window.as_ref())?;
    let sum = exprs.get(index)?;
    let function = classify(sum).ok()?;
    let Kind::Aggregate { agg, .. } = &function.kind else {
        return None;
    };
    if agg.fun().name() != "sum" || function.start != Start::Unbounded {
        return None;
    }
    let ts = ordered_by(sum.as_ref())?;
    Some(flag_gap(sum, &function.args, input, ts).unwrap_or_else(|| {
        Err(format!(
            "a GROUP BY key that is a running {}(...) OVER (PARTITION BY ... ORDER BY <event time>) streams as a session id only when what it sums is a gap flag with a constant gap over the same event time and PARTITION BY: CASE WHEN ts - LAG(ts) OVER (PARTITION BY k ORDER BY ts) <= INTERVAL '10 seconds' THEN 0 ELSE 1 END; write the flag that way, or window the aggregate (GROUP BY date_bin(INTERVAL ..., ts), ...)",
            agg.fun().name()
        ))
    }))
}

/// The gap of a running sum `sum` (over `input`, ordered by its column `ts`) of `args`, when
/// its argument is a gap flag over LAG of the same event time and partitions; `Some(Err)`
/// for a flag that would let a row join a session already closed.
fn flag_gap(
    sum: &Arc<dyn WindowExpr>,
    args: &[Arc<dyn PhysicalExpr>],
    input: &Arc<dyn ExecutionPlan>,
    ts: usize,
) -> Option<Result<i64, String>> {
    let [flag] = args else {
        return None;
    };
    // The flag is computed below (a column of the window's input), or is the argument.
    let (flag, below) = match flag.downcast_ref::<Column>() {
        Some(column) => {
            let (projection, flag) = to_projection(input, column.index())?;
            (flag, projection.input())
        }
        None => (Arc::clone(flag), input),
    };
    let (cmp, close, open) = flag_case(&flag)?;
    let (gap, (ts_now, lag_column)) = gap_of(&cmp, close, open)?;
    // `CASE WHEN ts - LAG(ts) > gap THEN 1 ELSE 0 END` is 0 for a row with no time, which
    // would join a session already closed.
    let nullable = below.schema().field(ts_now).is_nullable();
    if nullable && close > 0 {
        return Some(Err(format!(
            "the session flag {} is 0 for a row whose event time is NULL, so that row would join a session already emitted; write it as CASE WHEN ts - LAG(ts) OVER (...) <= INTERVAL ... THEN 0 ELSE 1 END, which starts a session on a NULL time, or filter out rows with no event time",
            volley_sql::sql_text::expr(&flag)
        )));
    }
    // The flag compares the row's own event time with LAG of it over the same partitions.
    let same = |a: &Arc<dyn ExecutionPlan>, i: usize, b: &Arc<dyn ExecutionPlan>, j: usize| {
        origins(a, i).is_some_and(|o| Some(o) == origins(b, j))
    };
    if !same(below, ts_now, input, ts) {
        return None;
    }
    let (lag_window, lag_index) = to_window(below, lag_column)?;
    let (lag_exprs, lag_input) = window_parts(lag_window.as_ref())?;
    let lag_expr = lag_exprs.get(lag_index)?;
    let lag_function = classify(lag_expr).ok()?;
    match &lag_function.kind {
        Kind::Shift { offset: 1, default } if default.is_null() => {}
        _ => return None,
    }
    let [of] = lag_function.args.as_slice() else {
        return None;
    };
    let lag_ts = ordered_by(lag_expr.as_ref())?;
    if !same(lag_input, of.downcast_ref::<Column>()?.index(), input, ts)
        || !same(lag_input, lag_ts, input, ts)
    {
        return None;
    }
    let partition = |expr: &Arc<dyn WindowExpr>, plan: &Arc<dyn ExecutionPlan>| {
        expr.partition_by()
            .iter()
            .map(|k| origins(plan, k.downcast_ref::<Column>()?.index()))
            .collect::<Option<Vec<_>>>()
    };
    let keys = partition(sum, input)?;
    if keys.is_empty() || Some(keys) != partition(lag_expr, lag_input) {
        return None;
    }
    Some(Ok(gap))
}

/// Where column `column` of `plan` comes from (through window operators' own columns too),
/// sorted.
fn origins(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<Vec<ColumnOrigin>> {
    if let Some((_, input)) = window_parts(plan.as_ref()) {
        return (column < input.schema().fields().len())
            .then(|| origins(input, column))
            .flatten();
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        return origins(projection.input(), uncast(expr).downcast_ref::<Column>()?.index());
    }
    if moves_rows(plan.as_ref())
        && let [child] = plan.children()[..]
    {
        return origins(child, column);
    }
    let mut origins = trace_column(plan, column)?;
    origins.sort_by(|a, b| (&a.input, a.column).cmp(&(&b.input, b.column)));
    Some(origins)
}

/// The event time a window expression is ordered by, ascending, alone.
fn ordered_by(expr: &dyn WindowExpr) -> Option<usize> {
    let [sort] = expr.order_by() else {
        return None;
    };
    if sort.options.descending {
        return None;
    }
    sort.expr.downcast_ref::<Column>().map(Column::index)
}

/// The window operator whose function `column` of `plan` is (and which of its functions),
/// through projections and nodes that only move or order rows.
fn to_window(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<(Arc<dyn ExecutionPlan>, usize)> {
    if let Some((_, input)) = window_parts(plan.as_ref()) {
        let width = input.schema().fields().len();
        return if column >= width {
            Some((Arc::clone(plan), column - width))
        } else {
            to_window(input, column)
        };
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        return to_window(projection.input(), expr.downcast_ref::<Column>()?.index());
    }
    let [child] = plan.children()[..] else {
        return None;
    };
    moves_rows(plan.as_ref()).then(|| to_window(child, column))?
}

/// The projection computing column `column` of `plan`, and its expression there.
fn to_projection(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<(&ProjectionExec, Arc<dyn PhysicalExpr>)> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        if let Some(c) = expr.downcast_ref::<Column>() {
            return to_projection(projection.input(), c.index());
        }
        return Some((projection, Arc::clone(expr)));
    }
    let [child] = plan.children()[..] else {
        return None;
    };
    moves_rows(plan.as_ref()).then(|| to_projection(child, column))?
}


/// `expr` without casts.
fn uncast(expr: &Arc<dyn PhysicalExpr>) -> &Arc<dyn PhysicalExpr> {
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        return uncast(c.expr());
    }
    if let Some(c) = expr.downcast_ref::<TryCastExpr>() {
        return uncast(c.expr());
    }
    expr
}

/// A whole-number literal.
fn whole(expr: &Arc<dyn PhysicalExpr>) -> Option<i128> {
    let literal = uncast(expr).downcast_ref::<Literal>()?;
    match literal.value().cast_to(&arrow::datatypes::DataType::Decimal128(38, 0)) {
        Ok(ScalarValue::Decimal128(Some(v), _, _)) => Some(v),
        _ => None,
    }
}

/// The flag `CASE WHEN cond THEN a ELSE b END`: its condition and values.
fn flag_case(expr: &Arc<dyn PhysicalExpr>) -> Option<(Arc<dyn PhysicalExpr>, i128, i128)> {
    let case = uncast(expr).downcast_ref::<CaseExpr>()?;
    if case.expr().is_some() {
        return None;
    }
    let [(when, then)] = case.when_then_expr() else {
        return None;
    };
    let otherwise = case.else_expr()?;
    Some((Arc::clone(when), whole(then)?, whole(otherwise)?))
}

/// The gap of a flag with condition `cond` that is `then` when it holds and `otherwise` when
/// not (or NULL), and the (event time, LAG) columns it compares: `ts - lag <= gap` with
/// `then` 0 and `otherwise` > 0, or `[lag IS NULL OR] ts - lag > gap` with `then` > 0 and
/// `otherwise` 0. Every value is at least 0, so the running sum never falls.
fn gap_of(cond: &Arc<dyn PhysicalExpr>, then: i128, otherwise: i128) -> Option<(i64, (usize, usize))> {
    if then < 0 || otherwise < 0 {
        return None;
    }
    let binary = uncast(cond).downcast_ref::<BinaryExpr>()?;
    if *binary.op() == Operator::Or {
        // `lag IS NULL OR ts - lag > gap`: the first row of a key starts a session.
        let is_null = uncast(binary.left()).downcast_ref::<IsNullExpr>()?;
        let lag = uncast(is_null.arg()).downcast_ref::<Column>()?.index();
        let (gap, pair) = gap_of(binary.right(), then, otherwise)?;
        return (pair.1 == lag && then > 0).then_some((gap, pair));
    }
    let diff = uncast(binary.left()).downcast_ref::<BinaryExpr>()?;
    if *diff.op() != Operator::Minus {
        return None;
    }
    let now = uncast(diff.left()).downcast_ref::<Column>()?.index();
    let lag = uncast(diff.right()).downcast_ref::<Column>()?.index();
    let limit = interval_nanos(binary.right())?;
    let gap = match binary.op() {
        // Within a session while the condition holds: 0 then, more than 0 otherwise (and on
        // NULL, so a row with no time starts a session).
        Operator::LtEq if then == 0 && otherwise > 0 => limit,
        Operator::Lt if then == 0 && otherwise > 0 => limit - 1,
        // A new session when the condition holds: more than 0 then, 0 otherwise.
        Operator::Gt if then > 0 && otherwise == 0 => limit,
        Operator::GtEq if then > 0 && otherwise == 0 => limit - 1,
        _ => return None,
    };
    (gap >= 0).then_some((gap, (now, lag)))
}

/// A constant interval, nanoseconds.
fn interval_nanos(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    let literal = uncast(expr).downcast_ref::<Literal>()?;
    volley_sql::stream::window::fixed_interval_nanos(literal.value())
}

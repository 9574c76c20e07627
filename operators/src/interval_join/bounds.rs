//! Recognising an interval join: `ON a.k = b.k AND b.ts BETWEEN a.ts - x AND a.ts + y`, two
//! watermarked event times whose difference is bounded on both sides.
//!
//! The bounds say how long a row can still find a partner: a left row at `l` matches right
//! rows in `[l + lo, l + hi]`, so once the right side's watermark passes `l + hi` it is done
//! (and a right row at `r` once the left watermark passes `r - lo`). The join's own filter
//! still decides every match; the bounds only say when rows may be dropped.

use std::sync::Arc;

use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::joins::utils::JoinFilter;

/// `right.ts - left.ts` lies in `[lo, hi]` (nanoseconds) for every match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalBounds {
    /// The left side's time column (of the left input).
    pub left_ts: usize,
    /// The right side's time column (of the right input).
    pub right_ts: usize,
    /// Lowest difference, nanoseconds.
    pub lo: i64,
    /// Highest difference, nanoseconds.
    pub hi: i64,
}

/// The (left column, right column) pair of a comparison and the bounds found for it.
type PairBounds = ((usize, usize), Option<i64>, Option<i64>);

/// A column (of the filter's schema) plus a constant offset in nanoseconds.
fn term(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, i64)> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some((c.index(), 0));
    }
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        return term(c.expr());
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let sign = match binary.op() {
        Operator::Plus => 1,
        Operator::Minus => -1,
        _ => return None,
    };
    let (column, offset) = term(binary.left())?;
    let nanos = interval_nanos(binary.right())?;
    Some((column, offset.checked_add(sign * nanos)?))
}

fn interval_nanos(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    volley_sql::stream::window::fixed_interval_nanos(expr.downcast_ref::<Literal>()?.value())
}

fn conjuncts<'a>(expr: &'a Arc<dyn PhysicalExpr>, out: &mut Vec<&'a Arc<dyn PhysicalExpr>>) {
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>()
        && *binary.op() == Operator::And
    {
        conjuncts(binary.left(), out);
        conjuncts(binary.right(), out);
        return;
    }
    out.push(expr);
}

/// The interval bounds of `join`'s filter, when it bounds the difference of one left and one
/// right column from both sides.
pub fn interval_bounds(join: &HashJoinExec) -> Option<IntervalBounds> {
    let filter: &JoinFilter = join.filter()?;
    let sides = filter.column_indices();
    let mut parts = Vec::new();
    conjuncts(filter.expression(), &mut parts);
    // Bounds found per (left column, right column) pair: (pair, lowest, highest).
    let mut pairs: Vec<PairBounds> = Vec::new();
    for part in parts {
        let Some(cmp) = part.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let (Some((a, oa)), Some((b, ob))) = (term(cmp.left()), term(cmp.right())) else {
            continue;
        };
        let (Some(sa), Some(sb)) = (sides.get(a), sides.get(b)) else {
            continue;
        };
        use datafusion::common::JoinSide::{Left, Right};
        // Normalise `a + oa  op  b + ob` to `right - left  op'  k`.
        let (left, right, k, flipped) = match (sa.side, sb.side) {
            (Right, Left) => (sb.index, sa.index, ob - oa, false),
            (Left, Right) => (sa.index, sb.index, oa - ob, true),
            _ => continue,
        };
        let at = match pairs.iter().position(|p| p.0 == (left, right)) {
            Some(at) => at,
            None => {
                pairs.push(((left, right), None, None));
                pairs.len() - 1
            }
        };
        let (_, lo, hi) = &mut pairs[at];
        let op = *cmp.op();
        let op = if flipped {
            match op {
                Operator::Gt => Operator::Lt,
                Operator::GtEq => Operator::LtEq,
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                other => other,
            }
        } else {
            op
        };
        match op {
            Operator::Gt | Operator::GtEq => *lo = Some(lo.map_or(k, |l: i64| l.max(k))),
            Operator::Lt | Operator::LtEq => *hi = Some(hi.map_or(k, |h: i64| h.min(k))),
            _ => {}
        }
    }
    // The first pair bounded from both sides; other comparisons (`b.ts <= a.expires`) stay
    // in the join's filter, which decides every match.
    pairs.into_iter().find_map(|((left_ts, right_ts), lo, hi)| {
        Some(IntervalBounds {
            left_ts,
            right_ts,
            lo: lo?,
            hi: hi?,
        })
    })
}

/// The right event time bounded from above only: `b.ts <= a.ts (+ k)` with no constant lower
/// bound, the form of a point-in-time (as-of) join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperBound {
    /// The left side's time column (of the left input).
    pub left_ts: usize,
    /// The right side's time column (of the right input).
    pub right_ts: usize,
    /// The highest `right.ts - left.ts`, nanoseconds.
    pub hi: i64,
}

/// The upper bound of `join`'s filter when every condition of it compares one right column,
/// the right time, with a left column (plus constants), and those bounding it from above all
/// compare it with one left column: then the right rows a future left row can match are all
/// right rows up to a time, whatever else the left row says. `None` for any other filter
/// (one that reads other right columns, or bounds the right time by several left columns).
pub fn upper_bound(join: &HashJoinExec) -> Option<UpperBound> {
    use datafusion::common::JoinSide::{Left, Right};
    let filter: &JoinFilter = join.filter()?;
    let sides = filter.column_indices();
    let mut parts = Vec::new();
    conjuncts(filter.expression(), &mut parts);
    let mut right_ts = None;
    let mut upper: Option<(usize, i64)> = None;
    for part in parts {
        let cmp = part.downcast_ref::<BinaryExpr>()?;
        let (a, oa) = term(cmp.left())?;
        let (b, ob) = term(cmp.right())?;
        let (sa, sb) = (sides.get(a)?, sides.get(b)?);
        // Normalise `a + oa  op  b + ob` to `right  op'  left + k`.
        let (left, right, k, op) = match (sa.side, sb.side) {
            (Right, Left) => (sb.index, sa.index, ob - oa, *cmp.op()),
            (Left, Right) => (
                sa.index,
                sb.index,
                oa - ob,
                match cmp.op() {
                    Operator::Gt => Operator::Lt,
                    Operator::GtEq => Operator::LtEq,
                    Operator::Lt => Operator::Gt,
                    Operator::LtEq => Operator::GtEq,
                    _ => return None,
                },
            ),
            _ => return None,
        };
        if *right_ts.get_or_insert(right) != right {
            return None;
        }
        match op {
            Operator::Lt | Operator::LtEq => match upper {
                Some((l, _)) if l != left => return None,
                Some((_, h)) => upper = Some((left, h.min(k))),
                None => upper = Some((left, k)),
            },
            Operator::Gt | Operator::GtEq => {}
            _ => return None,
        }
    }
    let (left_ts, hi) = upper?;
    Some(UpperBound {
        left_ts,
        right_ts: right_ts?,
        hi,
    })
}

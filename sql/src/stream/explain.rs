//! `volley explain`: the streaming plan of each INSERT, readably.

use std::fmt::Write;

use datafusion::physical_plan::ExecutionPlanProperties;

use super::aggregate_plan::AggregatePlan;
use super::graph::OutputPort;
use super::plan::{QueryPlan, QueryShape, render};

/// Renders one INSERT's streaming plan, with `watermarks` giving each source's watermark text.
pub fn explain_query(plan: &QueryPlan, watermark_of: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "INSERT INTO {}  ({})", plan.target, plan.at);
    let _ = writeln!(out, "  sources: {}", plan.sources.join(", "));
    if !plan.lookups.is_empty() {
        let _ = writeln!(
            out,
            "  lookup tables: {} (no watermark: loaded once and hashed once by each join; the stream's rows probe them)",
            plan.lookups.join(", ")
        );
    }
    if !plan.models.is_empty() {
        let _ = writeln!(
            out,
            "  models: {} (their SHA-256 goes into this sink's commit metadata)",
            plan.models.join(", ")
        );
    }
    let columns: Vec<String> = plan
        .output_schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    let _ = writeln!(out, "  output: {}", columns.join(", "));
    for warning in &plan.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    match &plan.shape {
        QueryShape::Stateless { plan: physical } => {
            let _ = writeln!(
                out,
                "  kind: stateless (each micro-batch streams straight through)"
            );
            let _ = writeln!(out, "  plan:");
            indent(&mut out, &render(physical));
        }
        QueryShape::Aggregate(_) | QueryShape::Join(_) => {
            explain_nodes(&mut out, plan, watermark_of)
        }
    }
    out
}

/// Every stateful node of `plan` in the order they run, each reading the ports below it, then
/// the segment above the last one.
fn explain_nodes(
    out: &mut String,
    plan: &QueryPlan,
    watermark_of: &dyn Fn(&str) -> Option<String>,
) {
    let nodes = plan.nodes();
    let ports: Vec<OutputPort> = nodes.iter().map(|n| n.port()).collect();
    for (i, node) in nodes.iter().enumerate() {
        let port = &ports[i];
        let _ = writeln!(
            out,
            "  operator {} of {}: {} ({}), reading {}:",
            i + 1,
            nodes.len(),
            port.name,
            port.described,
            node.inputs().join(", ")
        );
        let text = node.explain(&ExplainContext {
            watermark_of,
            ports: &ports,
        });
        for line in text.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !plan.key_columns.is_empty() {
        let _ = writeln!(out, "  upsert key: {}", plan.key_columns.join(", "));
    }
    let _ = writeln!(out, "  then, over what the last operator emits:");
    indent(out, &render(plan.post()));
}

/// What a node's `explain` may read: where the sources' watermarks come from, and every
/// node's port.
pub struct ExplainContext<'a> {
    /// A source's watermark option as written.
    pub watermark_of: &'a dyn Fn(&str) -> Option<String>,
    /// The ports of the INSERT's nodes.
    pub ports: &'a [OutputPort],
}

/// A join of two streams: its kind, each side and when it is complete, and the join itself.
pub(super) fn join_node(join: &super::join::JoinPlan, ctx: &ExplainContext<'_>) -> String {
    let mut text = String::new();
    let out = &mut text;
    let watermark_of = ctx.watermark_of;
    if let Some(bounds) = &join.interval {
        let _ = writeln!(
            out,
            "  kind: interval join of two streams on {} (right time - left time within [{}, {}]); new rows of each side meet the held rows of the other, a row is held until the other side's watermark says no partner can still come, and a row older than its own side's watermark goes to dead letters",
            join.display,
            crate::sql_text::interval(0, 0, bounds.lo),
            crate::sql_text::interval(0, 0, bounds.hi)
        );
        if let Some(ttl) = join.state_ttl {
            let _ = writeln!(
                out,
                "  state_ttl: {} of event time; the join has neither a shared window nor an interval, so only rows at most that far apart are joined, and results may differ from batch",
                crate::sql_text::duration(ttl)
            );
        }
    } else {
        let _ = writeln!(
            out,
            "  kind: windowed join of two streams on {} ({} wide); each side's rows are held by window until both sides are complete for it, then the window is joined once and its rows dropped; a row of a window already joined goes to dead letters",
            join.display,
            crate::sql_text::span(join.width, join.unit)
        );
    }
    for (name, side) in [("left (build)", &join.left), ("right (probe)", &join.right)] {
        let complete = match &side.frontier {
            super::join::SideFrontier::Sources { sources, .. } => {
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
            super::join::SideFrontier::Aggregate { input } => {
                format!("once {input} has emitted it")
            }
        };
        let what = if join.interval.is_some() {
            "held"
        } else {
            "complete for a window"
        };
        let _ = writeln!(out, "  {name} side, {what} {complete}:");
        indent(out, &render(&side.plan));
    }
    let _ = writeln!(
        out,
        "  join (DataFusion's, over the rows each epoch brings together):"
    );
    indent(out, &render(&join.join));
    text
}

/// A windowed or keyed aggregate: its window or key, state and per-micro-batch plan.
pub(super) fn aggregate_node(agg: &AggregatePlan, ctx: &ExplainContext<'_>) -> String {
    let mut text = String::new();
    explain_aggregate(&mut text, agg, ctx.watermark_of, ctx.ports, "");
    text
}

/// The window or key, state and per-micro-batch plan of one aggregate, indented by `pad`.
fn explain_aggregate(
    out: &mut String,
    agg: &AggregatePlan,
    watermark_of: &dyn Fn(&str) -> Option<String>,
    ports: &[super::graph::OutputPort],
    pad: &str,
) {
    match &agg.window {
        Some(w) if w.hop.is_some() => {
            let _ = writeln!(
                out,
                "{pad}  kind: hop-window aggregate; window {} over event time '{}' ({}); each row is aggregated once into its pane, a window merges its panes when the watermark passes its end, and a pane is dropped once its last window is emitted",
                w.display,
                w.column,
                size(w)
            );
        }
        Some(w) => {
            let _ = writeln!(
                out,
                "{pad}  kind: tumbling-window aggregate; window {} over event time '{}' ({} wide)",
                w.display,
                w.column,
                size(w)
            );
            if w.lateness > 0 {
                let _ = writeln!(
                    out,
                    "{pad}  allowed_lateness: {}; an emitted window keeps its state that long and a late row within it re-emits the corrected row (upsert)",
                    crate::sql_text::span(w.lateness, w.unit)
                );
            }
            for source in &w.sources {
                if let Some(time) = super::graph::time_by_watermark(ports, source) {
                    let _ = writeln!(
                        out,
                        "{pad}  watermark: {source}: {}; a window is emitted once it passes its end",
                        time.watermark_means
                    );
                    continue;
                }
                let text = watermark_of(source).unwrap_or_else(|| "?".into());
                let _ = writeln!(
                    out,
                    "{pad}  watermark: {source}: {text}; a window is emitted once the watermark passes its end; later rows go to dead letters"
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "{pad}  kind: keyed aggregate; emits upserts per micro-batch, keyed by the group columns"
            );
            if let Some(ttl) = agg.state_ttl {
                let _ = writeln!(
                    out,
                    "{pad}  state_ttl: {} of event time; a group not updated that long is forgotten, so results may differ from batch",
                    crate::sql_text::duration(ttl)
                );
            }
        }
    }
    let aggs: Vec<&str> = agg.aggr_expr.iter().map(|a| a.name()).collect();
    let _ = writeln!(
        out,
        "{pad}  aggregates (two-phase: partial per micro-batch, merged state, final at emission): {}",
        crate::sql_text::tidy(&aggs.join(", "))
    );
    let _ = writeln!(
        out,
        "{pad}  state: hash-partitioned by group key across {} shard(s)",
        agg.shards
    );
    let _ = writeln!(
        out,
        "{pad}  per micro-batch (stateless segment + partial aggregate, {} partition(s)):",
        agg.partial.output_partitioning().partition_count()
    );
    indent_by(out, &render(&agg.partial), pad);
}

/// A window's size in SQL: a tumbling window's width (`INTERVAL '1 minute'`, `INTERVAL '1
/// month'`), or a hop window's size, slide and panes.
fn size(w: &super::window::WindowSpec) -> String {
    use super::window::WindowSize;
    let span = |count: i64| crate::sql_text::span(count, w.unit);
    match (w.hop, w.size) {
        (Some(hop), WindowSize::Fixed(pane)) => format!(
            "{} wide, every {}, in panes of {}",
            span(hop.size),
            span(hop.slide),
            span(pane)
        ),
        (_, WindowSize::Fixed(width)) => span(width),
        (_, WindowSize::Months(months)) => {
            crate::sql_text::interval(i32::try_from(months).unwrap_or(i32::MAX), 0, 0)
        }
    }
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "    {line}");
    }
}

fn indent_by(out: &mut String, text: &str, pad: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{pad}    {line}");
    }
}

//! `volley explain`: the streaming plan of each INSERT, readably.

use std::fmt::Write;

use super::graph::{ExplainContext, OutputPort};
use super::plan::QueryPlan;
use super::render::{indent_by, render};

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
        .map(|f| {
            format!(
                "{} {}",
                f.name(),
                crate::sql_text::sql_type_name(f.data_type())
            )
        })
        .collect();
    let _ = writeln!(out, "  output: {}", columns.join(", "));
    for warning in &plan.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    if plan.nodes().is_empty() {
        let _ = writeln!(
            out,
            "  kind: stateless (each micro-batch streams straight through)"
        );
        let _ = writeln!(out, "  plan:");
        indent_by(&mut out, &render(plan.post()), "");
    } else {
        explain_nodes(&mut out, plan, watermark_of);
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
    indent_by(out, &render(plan.post()), "");
}

//! Physical plans as `explain` prints them.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, displayable};

/// An indented, readable rendering of a physical plan.
pub fn render(plan: &Arc<dyn ExecutionPlan>) -> String {
    crate::sql_text::tidy(&displayable(plan.as_ref()).indent(false).to_string())
}

/// Appends `text` to `out`, each line after `pad` and four spaces.
pub fn indent_by(out: &mut String, text: &str, pad: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{pad}    {line}");
    }
}

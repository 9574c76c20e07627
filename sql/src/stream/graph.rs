//! The stream graph's ports: what an operator node's output is to the nodes that read it.
//!
//! An INSERT streams as stateless DataFusion segments between stateful operator nodes. A
//! segment reads a node's rows through a leaf named after the node's port; the port says what
//! those rows are: their schema, which of their columns are event times (and which of those
//! start windows), under which key each time's watermark is published, and whether the rows
//! only append or update rows emitted before. A node above learns everything it needs of its
//! input from the port, never from the concrete operator behind it.

use std::sync::Arc;

use arrow::datatypes::{SchemaRef, TimeUnit};
use datafusion::execution::TaskContext;

use super::operator::StreamOperator;
use super::order::Emitted;

/// How a node's rows relate to the rows it emitted before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Every row is new and final (a window emitted once, a joined row).
    Append,
    /// A row replaces the row of the same key emitted before (a keyed aggregate, or a window
    /// corrected by late rows).
    Upsert,
}

/// An event-time column of a node's output: every row the node emits from now on has this
/// column at or after the watermark published under `watermark`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTime {
    /// The column.
    pub column: usize,
    /// When the column starts windows (a window aggregate's window column, a windowed join's
    /// window): their width (a hop window's slide) and unit. Rows of one window share it and
    /// are all emitted together.
    pub step: Option<(i64, TimeUnit)>,
    /// The key its watermark is published under in each epoch's watermarks.
    pub watermark: String,
    /// What it is, for `explain`: `the join's window`, `the left side's event time`.
    pub what: String,
    /// What its watermark is, for `explain`: `the start of the earliest window the aggregate
    /// below has not emitted`.
    pub watermark_means: String,
}

/// What a node's output is to the nodes that read it.
#[derive(Debug, Clone)]
pub struct OutputPort {
    /// The input name the leaves reading it use.
    pub name: String,
    /// Its rows' schema.
    pub schema: SchemaRef,
    /// Where the runner puts the rows it emits each epoch, for the leaves reading them.
    pub slot: Arc<super::leaf::EpochSlot>,
    /// Its event-time columns.
    pub times: Vec<PortTime>,
    /// Whether it appends or updates.
    pub emit: Emit,
    /// What the node is, for messages: `an aggregate`, `a keyed aggregate (GROUP BY user_id
    /// without a window)`, `a join of two streams`.
    pub described: String,
    /// Which of its columns a window over its rows may be over, for messages: `that
    /// aggregate's own window column (its event time)`.
    pub time_rule: String,
    /// The columns that identify one of its rows among those emitted before (a group's key
    /// and window); empty when none do.
    pub key: Vec<usize>,
    /// Why an aggregate over its rows must be windowed by one of its times, when it must
    /// (completing `an aggregate over <described> (GROUP BY …) …`).
    pub needs_window: Option<String>,
}

impl OutputPort {
    /// [`OutputPort::described`] owning something: `an aggregate's`, `a join of two streams'`.
    pub fn possessive(&self) -> String {
        if self.described.ends_with('s') {
            format!("{}'", self.described)
        } else {
            format!("{}'s", self.described)
        }
    }

    /// The event time that column `column` is, if it is one.
    pub fn time(&self, column: usize) -> Option<&PortTime> {
        self.times.iter().find(|t| t.column == column)
    }
}

/// The time among `ports` whose watermark is published under `key`.
pub fn time_by_watermark<'a>(ports: &'a [OutputPort], key: &str) -> Option<&'a PortTime> {
    ports
        .iter()
        .flat_map(|p| p.times.iter())
        .find(|t| t.watermark == key)
}

/// The port named `name` among `ports`.
pub fn port<'a>(ports: &'a [OutputPort], name: &str) -> Option<&'a OutputPort> {
    ports.iter().find(|p| p.name == name)
}

/// One stateful node of an INSERT's stream graph, as every consumer of a plan (the runner,
/// `explain`, the sink checks, group mode, checkpoints) sees it: never by its concrete type.
pub trait StreamNode: std::fmt::Debug + Send + Sync {
    /// What kind of operator it is (`aggregate`, `join`): the runtime that runs it.
    fn kind(&self) -> &'static str;

    /// Its identity for checkpoints: what it computes (its kind, its INSERT and its output's
    /// columns), not where it sits in the plan, so a node planned in beside it does not rename
    /// its state. [`node_ids`] makes equal ones distinct.
    fn id(&self) -> String {
        let port = self.port();
        let target = port.name.split('#').next().unwrap_or_default().to_string();
        let columns: Vec<String> = port
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in columns.join(",").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{target}#{}-{hash:016x}", self.kind())
    }

    /// Its output.
    fn port(&self) -> OutputPort;

    /// The inputs it reads: sources, and the ports of the nodes below it.
    fn inputs(&self) -> Vec<String>;

    /// In group mode, whether all rows of one piece of its state share the value of source
    /// `table`'s column `column` (so a process holding some of that column's values holds
    /// whole pieces). An error: it cannot run in group mode at all, and why.
    fn confined_to(&self, table: &str, column: &str) -> Result<bool, String>;

    /// What it does, for `explain`: indented lines under its heading.
    fn explain(&self, ctx: &ExplainContext<'_>) -> String;

    /// Its runtime, executing in `task_ctx`, with empty state.
    fn instantiate(&self, task_ctx: Arc<TaskContext>) -> Box<dyn StreamOperator>;

    /// A copy of the node (a plan is planned once and run by several runners).
    fn boxed_clone(&self) -> Box<dyn StreamNode>;

    /// How its rows are emitted, for the sorts above it: by default as its port says (updates
    /// or rows as they stream in).
    fn emitted(&self) -> Emitted {
        match self.port().emit {
            Emit::Upsert => Emitted::Updates,
            Emit::Append => Emitted::Rows,
        }
    }

    /// What the user should know about how it runs (shown by `explain` and logged).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Takes its sink's `allowed_lateness` and `state_ttl`, as the last node of an INSERT. An
    /// error for an option it does not take: why, completing `'allowed_lateness' …`.
    fn take_sink_options(
        &mut self,
        allowed_lateness: Option<std::time::Duration>,
        state_ttl: Option<std::time::Duration>,
    ) -> Result<(), String> {
        let _ = state_ttl;
        match allowed_lateness {
            Some(_) => Err("keeps windows open for late rows, and this INSERT has no window (date_bin, tumble or date_trunc)".to_string()),
            None => Ok(()),
        }
    }

    /// Whether its rows re-emit windows corrected by late rows (`allowed_lateness`).
    fn corrects_windows(&self) -> bool {
        false
    }

    /// Whether a sink's `state_ttl` bounds it where its SQL did not (so its result may differ
    /// from batch).
    fn bounded_by_ttl(&self) -> bool {
        false
    }

    /// The concrete plan, for tests and its own kind's code only.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The checkpoint ids of `nodes`, in order: each node's [`StreamNode::id`], with `~2`, `~3`
/// after the second and later of equal ones (in plan order).
pub fn node_ids(nodes: &[&dyn StreamNode]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let id = node.id();
        let seen = ids
            .iter()
            .filter(|i| i.split('~').next() == Some(id.as_str()))
            .count();
        ids.push(if seen == 0 {
            id
        } else {
            format!("{id}~{}", seen + 1)
        });
    }
    ids
}

/// What a node's `explain` may read: where the sources' watermarks come from, and every
/// node's port.
pub struct ExplainContext<'a> {
    /// A source's watermark option as written.
    pub watermark_of: &'a dyn Fn(&str) -> Option<String>,
    /// The ports of the INSERT's nodes.
    pub ports: &'a [OutputPort],
}

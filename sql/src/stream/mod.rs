//! The streaming plan: DataFusion physical plans cut at stateful nodes into a stream graph,
//! with long-lived leaves; the planning core every operator kind's rule plans through.

pub mod capability;
pub mod determinism;
pub mod explain;
pub mod filters_first;
pub mod graph;
pub mod late;
pub mod leaf;
pub mod lookup;
pub mod operator;
pub mod order;
pub mod plan;
pub mod positions;
pub mod rank_limit;
pub mod render;
pub mod ties;
pub mod trace;
pub mod ttl;
pub mod window;
pub mod window_op;

pub use late::{LateFilter, LateGate, LateRows};
pub use leaf::{EpochSlot, EpochSourceExec, EpochTable};
pub use lookup::{LookupContent, LookupData, LookupTable};
pub use plan::rule;
pub use plan::{
    QueryPlan, SourceBinding, StreamPlanner, batch_context, batch_context_with,
    insert_logical_plan, register_models, streaming_context,
};
pub use window::{WindowSize, WindowSpec};

//! The streaming plan: DataFusion physical plans cut at the aggregate, with long-lived leaves.

pub mod aggregate_plan;
pub mod capability;
pub mod determinism;
pub mod explain;
pub mod graph;
pub mod hop;
pub mod interval;
pub mod join;
pub mod late;
pub mod leaf;
pub mod lookup;
pub mod operator;
pub mod order;
pub mod plan;
pub mod render;
pub mod trace;
pub mod ttl;
pub mod window;

pub use late::{LateFilter, LateGate, LateRows};
pub use leaf::{EpochSlot, EpochSourceExec, EpochTable};
pub use lookup::{LookupContent, LookupData, LookupTable};
pub use plan::{
    AggregatePlan, KeySource, QueryPlan, QueryShape, SourceBinding, StreamPlanner, batch_context,
    batch_context_with, insert_logical_plan, register_models, streaming_context,
};
pub use window::{WindowSize, WindowSpec};

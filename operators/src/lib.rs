//! Volley's stateful streaming operators: one folder per operator kind, holding its planning
//! rule, its node, its runtime and its tests, registered in one line each (below). An
//! INSERT's operators run through [`QueryRunner`]; [`kit`] runs one over small text tables.

#[macro_use]
mod registry;

pub mod grouped;
pub mod kit;
pub mod runner;
pub mod two_streams;

pub use runner::{QueryEpoch, QueryRunner};

operators! {
    hop => HopRule,
    aggregate => AggregateRule,
    window_join => WindowJoinRule,
    interval_join => IntervalJoinRule,
    per_window => PerWindowRule,
    top_n => TopNRule,
    over => OverRule,
}

//! Volley's stateful streaming operators: one folder per operator kind, holding its planning
//! rule, its node, its runtime and its tests, registered in one line each ([`registry`]). An
//! INSERT's operators run through [`QueryRunner`]; [`kit`] runs one over small text tables.

pub mod aggregate;
pub mod grouped;
pub mod join;
pub mod kit;
pub mod registry;
pub mod runner;

pub use registry::rules;
pub use runner::{QueryEpoch, QueryRunner};

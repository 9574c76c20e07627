//! End-to-end tests: stream-vs-batch parity, SQL semantics (sqllogictest), window edges.
#![allow(clippy::unwrap_used, missing_docs)]

mod aggregate_fuzz;
mod chained;
mod crash;
mod duckdb_oracle;
mod edges;
mod flight_clients;
mod harness;
mod hop;
mod kafka;
mod kafka_crash;
mod kafka_faults;
mod lateness;
mod lookup;
mod lookup_refresh;
mod nexmark;
mod parity;
mod partitions;
mod predict;
mod process;
mod readers;
mod recovery;
mod scale_out;
mod sink_fit;
mod slt;
mod state_ttl;

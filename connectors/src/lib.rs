//! Sources and sinks for Volley, one folder per connector, all behind the [`Connector`] trait
//! and registered by `STORED AS` kind in [`ConnectorRegistry`].
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod blackhole;
pub mod codec;
pub mod dead_letter;
pub mod delta;
pub mod error;
pub mod files;
pub mod generator;
pub mod kafka;
pub mod live;
pub mod location;
pub mod memory;
pub mod registry;
pub mod traits;
pub mod types;

pub use error::{ConnectorError, Result};
pub use registry::ConnectorRegistry;
pub use traits::{
    Connector, ModelLineage, Position, RejectedRecord, Sink, SinkContext, Source, SourceMonitor,
    SourcePoll,
};

//! The connector registry: `STORED AS` kind → [`Connector`].

use std::collections::BTreeMap;
use std::sync::Arc;

use volley_sql::{KindCatalog, OptionSpec};

use crate::traits::Connector;

/// Every connector known to this build, keyed by `STORED AS` kind.
#[derive(Debug, Clone)]
pub struct ConnectorRegistry {
    by_kind: BTreeMap<&'static str, Arc<dyn Connector>>,
}

impl ConnectorRegistry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self {
            by_kind: BTreeMap::new(),
        }
    }

    /// The built-in connectors: GENERATOR, PARQUET, CSV, JSON, DELTA, KAFKA, BLACKHOLE.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        registry.register(Arc::new(crate::generator::GeneratorConnector));
        for format in crate::files::FileFormat::ALL {
            registry.register(Arc::new(crate::files::FileConnector::new(format)));
        }
        registry.register(Arc::new(crate::delta::DeltaConnector));
        registry.register(Arc::new(crate::kafka::KafkaConnector));
        registry.register(Arc::new(crate::blackhole::BlackholeConnector));
        registry.register(Arc::new(crate::memory::MemoryConnector));
        registry
    }

    /// Adds (or replaces) a connector.
    pub fn register(&mut self, connector: Arc<dyn Connector>) {
        self.by_kind.insert(connector.kind(), connector);
    }

    /// The connector for `kind` (case-insensitive).
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Connector>> {
        self.by_kind.get(kind.to_ascii_uppercase().as_str())
    }
}

impl KindCatalog for ConnectorRegistry {
    fn kind_options(&self, kind: &str) -> Option<&'static [OptionSpec]> {
        self.get(kind).map(|c| c.options())
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.by_kind.keys().copied().collect()
    }
}

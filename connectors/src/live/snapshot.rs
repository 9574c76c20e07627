//! Consistent snapshots of every live table, published together once per epoch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::{LiveTable, RetainedTable};
use crate::error::{ConnectorError, Result};

/// One live table as of one epoch: immutable, cheap to clone.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// The table's schema.
    pub schema: SchemaRef,
    /// The key columns' names: each key has one row.
    pub key: Arc<[String]>,
    /// Its rows: the latest row per key.
    pub batches: Arc<[RecordBatch]>,
}

/// Every live table as of one epoch. A query reads one `Snapshot`, so it sees whole epochs
/// only, and the same epoch in every table.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The epoch every table was published at; 0 before the first.
    pub epoch: u64,
    /// The tables by name.
    pub tables: BTreeMap<String, TableSnapshot>,
}

/// Where the latest [`Snapshot`] is read from. Publishing swaps one `Arc`, and reading clones
/// it: neither waits on a query, however long the query runs over what it read.
#[derive(Debug, Default)]
pub struct Published {
    current: RwLock<Arc<Snapshot>>,
}

impl Published {
    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        // A panic while swapping leaves the previous Arc in place: still a whole snapshot.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn publish(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }
}

/// One live table: keyed (the latest row per key) or retained (the last rows of a stream).
#[derive(Debug)]
enum Kept {
    Keyed(LiveTable),
    Retained(RetainedTable),
}

impl Kept {
    fn snapshot(&mut self) -> Result<TableSnapshot> {
        Ok(match self {
            Self::Keyed(table) => TableSnapshot {
                schema: Arc::clone(table.schema()),
                key: table.key_names(),
                batches: table.snapshot()?,
            },
            Self::Retained(table) => TableSnapshot {
                schema: Arc::clone(table.schema()),
                key: Arc::from(Vec::<String>::new()),
                batches: table.snapshot()?,
            },
        })
    }
}

/// A process's live tables: upserts applied per epoch, published together.
#[derive(Debug, Default)]
pub struct LiveTables {
    tables: BTreeMap<String, Kept>,
    published: Arc<Published>,
    epoch: u64,
}

impl LiveTables {
    /// No tables yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a table, before the first epoch is applied: readers see it at once, empty until
    /// an epoch that wrote it is published.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when a table of that name exists.
    pub fn add(&mut self, table: LiveTable) -> Result<()> {
        self.insert(table.name().to_string(), Kept::Keyed(table))
    }

    /// Adds a table of a keyless sink's last rows, as [`LiveTables::add`] does.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] when a table of that name exists.
    pub fn add_retained(&mut self, table: RetainedTable) -> Result<()> {
        self.insert(table.name().to_string(), Kept::Retained(table))
    }

    fn insert(&mut self, name: String, table: Kept) -> Result<()> {
        if self.tables.contains_key(&name) {
            return Err(ConnectorError::config(&name, "is a live table twice"));
        }
        self.tables.insert(name, table);
        self.publish(self.epoch)
    }

    /// The tables' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Whether a table of that name is kept.
    pub fn contains(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }

    /// Where readers get snapshots.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// Applies an epoch's upserts to table `name`. Readers see them once the epoch is
    /// published.
    ///
    /// # Errors
    /// An unknown table (a bug in the caller) and [`LiveTable::apply`]'s.
    pub fn apply(&mut self, name: &str, batch: &RecordBatch) -> Result<()> {
        match self
            .tables
            .get_mut(name)
            .ok_or_else(|| ConnectorError::Internal(format!("no live table '{name}'")))?
        {
            Kept::Keyed(table) => table.apply(batch),
            Kept::Retained(table) => table.apply(batch),
        }
    }

    /// Publishes every table as of `epoch`, together: call it once every sink has written
    /// the epoch.
    ///
    /// # Errors
    /// [`LiveTable::snapshot`]'s.
    pub fn publish(&mut self, epoch: u64) -> Result<()> {
        let mut tables = BTreeMap::new();
        for (name, table) in &mut self.tables {
            tables.insert(name.clone(), table.snapshot()?);
        }
        self.published.publish(Snapshot { epoch, tables });
        self.epoch = epoch;
        Ok(())
    }
}

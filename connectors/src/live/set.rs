//! Where queries read snapshots from: one job's [`Published`], or the union of several jobs'
//! (group mode: one job per partition, each publishing its own epochs).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{Published, Snapshot, TableSnapshot};

/// Gives the snapshot a query reads.
pub trait SnapshotSource: Send + Sync + std::fmt::Debug {
    /// The latest snapshot: whole epochs only.
    fn current(&self) -> Arc<Snapshot>;
}

impl SnapshotSource for Published {
    fn current(&self) -> Arc<Snapshot> {
        Published::current(self)
    }
}

/// The live tables of several jobs that each own a share of the keys (group mode's partition
/// jobs), read as one: a table is the union of every job's latest snapshot of it. Each job's
/// share is one whole epoch of that job; the snapshot's `epoch` is the lowest of them.
#[derive(Debug)]
pub struct PublishedSet {
    /// What every table looks like with no job running: empty, of its schema.
    empty: Arc<Published>,
    jobs: RwLock<BTreeMap<String, Arc<Published>>>,
}

impl PublishedSet {
    /// A set whose tables are those of `empty` (their schemas and keys; rows ignored) until
    /// jobs join.
    pub fn new(empty: Arc<Published>) -> Self {
        Self {
            empty,
            jobs: RwLock::new(BTreeMap::new()),
        }
    }

    /// Job `name` now publishes into `published` (replacing a job of that name).
    pub fn insert(&self, name: &str, published: Arc<Published>) {
        self.jobs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), published);
    }

    /// Job `name` stopped: its share is no longer served.
    pub fn remove(&self, name: &str) {
        self.jobs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }
}

impl SnapshotSource for PublishedSet {
    fn current(&self) -> Arc<Snapshot> {
        let parts: Vec<Arc<Snapshot>> = self
            .jobs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|p| p.current())
            .collect();
        let empty = self.empty.current();
        let mut tables = BTreeMap::new();
        for (name, table) in &empty.tables {
            let batches: Vec<_> = parts
                .iter()
                .filter_map(|p| p.tables.get(name))
                .flat_map(|t| t.batches.iter().cloned())
                .collect();
            tables.insert(
                name.clone(),
                TableSnapshot {
                    schema: Arc::clone(&table.schema),
                    key: Arc::clone(&table.key),
                    batches: batches.into(),
                },
            );
        }
        let epoch = parts.iter().map(|p| p.epoch).min().unwrap_or(0);
        Arc::new(Snapshot { epoch, tables })
    }
}

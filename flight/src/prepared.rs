//! Prepared statements: a handle per statement a client prepared, with the values it bound.

use std::collections::BTreeMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use bytes::Bytes;

/// How many prepared statements are kept at once; preparing one more forgets the oldest
/// (clients that never close their statements cannot grow the server without bound).
pub(super) const MAX_PREPARED: usize = 4096;

/// A statement a client prepared.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    /// Its SQL, as the client sent it.
    pub sql: String,
    /// The values last bound to its parameters: one execution per row.
    pub values: Option<RecordBatch>,
}

/// The prepared statements of every client, by handle.
#[derive(Debug, Default)]
pub(super) struct PreparedStatements {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    statements: BTreeMap<u64, Prepared>,
}

impl PreparedStatements {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update below is one map operation: a panic cannot leave it half done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `sql` and returns its handle.
    pub fn insert(&self, sql: String) -> Bytes {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.statements.insert(id, Prepared { sql, values: None });
        while inner.statements.len() > MAX_PREPARED {
            inner.statements.pop_first();
        }
        Bytes::copy_from_slice(&id.to_be_bytes())
    }

    /// The statement of `handle`.
    ///
    /// # Errors
    /// A message for the client when the handle is unknown.
    pub fn get(&self, handle: &[u8]) -> Result<Prepared, String> {
        let id = id(handle)?;
        self.lock()
            .statements
            .get(&id)
            .cloned()
            .ok_or_else(|| unknown(id))
    }

    /// Binds `values` to the statement of `handle`.
    ///
    /// # Errors
    /// A message for the client when the handle is unknown.
    pub fn bind(&self, handle: &[u8], values: RecordBatch) -> Result<(), String> {
        let id = id(handle)?;
        let mut inner = self.lock();
        let statement = inner.statements.get_mut(&id).ok_or_else(|| unknown(id))?;
        statement.values = Some(values);
        Ok(())
    }

    /// Forgets the statement of `handle`; closing one twice is not an error.
    ///
    /// # Errors
    /// A message for the client when the handle is not one of ours.
    pub fn close(&self, handle: &[u8]) -> Result<(), String> {
        let id = id(handle)?;
        self.lock().statements.remove(&id);
        Ok(())
    }
}

fn id(handle: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(handle)
        .map(u64::from_be_bytes)
        .map_err(|_| "not a prepared statement handle of this server".to_string())
}

fn unknown(id: u64) -> String {
    format!(
        "prepared statement {id} is unknown: it was closed, or the server restarted or forgot it (it keeps the latest {MAX_PREPARED}); prepare it again"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{MAX_PREPARED, PreparedStatements};

    #[test]
    fn handles_are_kept_until_closed_or_too_many() {
        let statements = PreparedStatements::default();
        let first = statements.insert("SELECT 1".into());
        assert_eq!(statements.get(&first).unwrap().sql, "SELECT 1");
        statements.close(&first).unwrap();
        assert!(statements.get(&first).unwrap_err().contains("unknown"));
        statements.close(&first).unwrap();
        let oldest = statements.insert("SELECT 2".into());
        for _ in 0..MAX_PREPARED {
            statements.insert("SELECT 3".into());
        }
        assert!(statements.get(&oldest).is_err());
        assert!(
            statements
                .get(b"bad")
                .unwrap_err()
                .contains("not a prepared")
        );
    }
}

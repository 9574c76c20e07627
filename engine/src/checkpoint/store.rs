//! Durable layout of checkpoints and the epoch log in any `object_store` location.
//!
//! ```text
//! <dir>/epochs/00000000000000000042.json                epoch 42's input ranges, written before it runs
//! <dir>/memo/00000000000000000042/0-fraud.arrow          epoch 42's scores of model fraud, before sinks write
//! <dir>/checkpoints/00000000000000000042/q0.o1.left.arrow  INSERT 0's operator 1's `left` state (Arrow IPC)
//! <dir>/checkpoints/00000000000000000042/manifest.json     written after the state files
//! <dir>/_latest                                          "42": switched last
//! ```
//!
//! A checkpoint is valid once its manifest exists; `_latest` is only a shortcut, so a crash
//! between the manifest and the pointer switch loses nothing.

use std::io::Cursor;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use volley_connectors::location::Location;

use volley_udfs::model::MemoBatch;

use super::manifest::{EpochLog, FORMAT, Manifest, OLDEST_FORMAT};
use crate::error::{EngineError, Result};

/// Checkpoints and epoch logs under one directory (local path or object-store URL).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    display: String,
    keep: usize,
}

/// `batches` as one Arrow IPC file.
fn ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut writer = FileWriter::try_new(&mut buffer, schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(buffer)
}

fn io(what: String) -> impl FnOnce(object_store::Error) -> EngineError {
    move |e| EngineError::Checkpoint(format!("{what}: {e}"))
}

impl CheckpointStore {
    /// The store at `location`, keeping the last `keep` checkpoints.
    ///
    /// # Errors
    /// A location that is not a path or a supported URL.
    pub async fn open(location: &str, keep: usize) -> Result<Self> {
        let resolved = Location::resolve_sink_dir("checkpoints", location).await?;
        Ok(Self {
            display: resolved.url.to_string(),
            store: resolved.store,
            root: resolved.path,
            keep: keep.max(1),
        })
    }

    /// Where the checkpoints are, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn path(&self, rest: &str) -> Path {
        let mut path = self.root.clone();
        for part in rest.split('/') {
            path = path.join(part);
        }
        path
    }

    async fn put(&self, rest: &str, bytes: Vec<u8>) -> Result<u64> {
        let len = bytes.len() as u64;
        self.store
            .put(&self.path(rest), PutPayload::from(bytes))
            .await
            .map_err(io(format!("writing {}/{rest}", self.display)))?;
        Ok(len)
    }

    async fn get(&self, rest: &str) -> Result<Option<bytes::Bytes>> {
        match self.store.get(&self.path(rest)).await {
            Ok(found) => Ok(Some(
                found
                    .bytes()
                    .await
                    .map_err(io(format!("reading {}/{rest}", self.display)))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io(format!("reading {}/{rest}", self.display))(e)),
        }
    }

    /// Epoch numbers found under `dir` (file or folder names that are numbers).
    async fn numbered(&self, dir: &str) -> Result<Vec<u64>> {
        let prefix = self.path(dir);
        let found: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(io(format!("listing {}/{dir}", self.display)))?;
        let mut epochs: Vec<u64> = found
            .iter()
            .filter_map(|meta| {
                let rest = meta.location.prefix_match(&prefix)?;
                let first = rest.into_iter().next()?;
                let name = first.as_ref();
                name.strip_suffix(".json")
                    .unwrap_or(name)
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        epochs.dedup();
        Ok(epochs)
    }

    /// Logs epoch `log.epoch`'s input ranges (before the epoch runs). The entry is created,
    /// never replaced: an entry that already exists means another process logged that epoch
    /// (it took the pipeline, or its share of it, over), and this one must stop: that is the
    /// fence that keeps two owners from running one pipeline.
    ///
    /// # Errors
    /// Store failures, and [`EngineError::Fenced`] when the epoch is already logged.
    pub async fn log_epoch(&self, log: &EpochLog) -> Result<()> {
        let json = serde_json::to_vec(log)
            .map_err(|e| EngineError::Internal(format!("encoding epoch log: {e}")))?;
        let rest = format!("epochs/{:020}.json", log.epoch);
        let created = self
            .store
            .put_opts(
                &self.path(&rest),
                PutPayload::from(json),
                object_store::PutMode::Create.into(),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(EngineError::Fenced(format!(
                "epoch {} is already logged in {}: another process runs this pipeline (or took \
                 this share of it over); this one stops",
                log.epoch, self.display
            ))),
            Err(e) => Err(io(format!("writing {}/{rest}", self.display))(e)),
        }
    }

    /// Logged epochs after `after`, in order.
    ///
    /// # Errors
    /// Store failures and unreadable entries.
    pub async fn epochs_after(&self, after: u64) -> Result<Vec<EpochLog>> {
        let mut out = Vec::new();
        for epoch in self.numbered("epochs").await? {
            if epoch <= after {
                continue;
            }
            let name = format!("epochs/{epoch:020}.json");
            let Some(bytes) = self.get(&name).await? else {
                continue;
            };
            let log: EpochLog = serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::Checkpoint(format!("{}/{name} is unreadable: {e}", self.display))
            })?;
            out.push(log);
        }
        Ok(out)
    }

    /// Writes epoch `epoch`'s inference memo, one Arrow IPC file per model (replacing what an
    /// earlier run of the epoch wrote); returns the bytes written.
    ///
    /// # Errors
    /// Store and encoding failures.
    pub async fn put_memo(&self, epoch: u64, memos: &[MemoBatch]) -> Result<u64> {
        let mut bytes = 0;
        for (i, memo) in memos.iter().enumerate() {
            let batch = memo.to_record_batch()?;
            let name: String = memo
                .model
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let file = format!("memo/{epoch:020}/{i}-{name}.arrow");
            bytes += self.put(&file, ipc(&batch.schema(), &[batch])?).await?;
        }
        Ok(bytes)
    }

    /// Epoch `epoch`'s inference memo, if an earlier run wrote one.
    ///
    /// # Errors
    /// Store failures and files that are not memos.
    pub async fn memo(&self, epoch: u64) -> Result<Vec<MemoBatch>> {
        let prefix = self.path(&format!("memo/{epoch:020}"));
        let found: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(io(format!("listing {}/memo", self.display)))?;
        let mut memos = Vec::with_capacity(found.len());
        for meta in found {
            let name = meta.location.to_string();
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(io(format!("reading {name}")))?
                .bytes()
                .await
                .map_err(io(format!("reading {name}")))?;
            let unreadable =
                |e: String| EngineError::Checkpoint(format!("memo file {name} is unreadable: {e}"));
            let reader = FileReader::try_new(Cursor::new(bytes), None)
                .map_err(|e| unreadable(e.to_string()))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| unreadable(e.to_string()))?;
            memos.push(MemoBatch::from_record_batches(&schema, &batches).map_err(unreadable)?);
        }
        Ok(memos)
    }

    /// Deletes the memos of epochs up to `upto` (a checkpoint covers them).
    async fn drop_memos(&self, upto: u64) -> Result<()> {
        for epoch in self.numbered("memo").await? {
            if epoch > upto {
                continue;
            }
            let prefix = self.path(&format!("memo/{epoch:020}"));
            let files: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(io(format!("listing {}/memo", self.display)))?;
            for meta in files {
                self.delete(&meta.location).await?;
            }
        }
        Ok(())
    }

    /// Writes one state file of checkpoint `epoch`; returns its size in bytes.
    ///
    /// # Errors
    /// Store and encoding failures.
    pub async fn put_state(
        &self,
        epoch: u64,
        file: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<u64> {
        self.put(
            &format!("checkpoints/{epoch:020}/{file}"),
            ipc(schema, batches)?,
        )
        .await
    }

    /// Reads one state file of checkpoint `epoch`.
    ///
    /// # Errors
    /// A missing or unreadable file.
    pub async fn get_state(&self, epoch: u64, file: &str) -> Result<Vec<RecordBatch>> {
        let name = format!("checkpoints/{epoch:020}/{file}");
        let bytes = self.get(&name).await?.ok_or_else(|| {
            EngineError::Checkpoint(format!("{}/{name} is missing", self.display))
        })?;
        let reader = FileReader::try_new(Cursor::new(bytes), None)?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(EngineError::from)
    }

    /// Makes checkpoint `manifest.epoch` valid (manifest after its state files), switches the
    /// pointer to it, and drops checkpoints and epoch logs older than the last `keep`.
    /// Returns the manifest's size in bytes.
    ///
    /// # Errors
    /// Store failures.
    pub async fn commit(&self, manifest: &Manifest) -> Result<u64> {
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| EngineError::Internal(format!("encoding checkpoint manifest: {e}")))?;
        let size = self
            .put(
                &format!("checkpoints/{:020}/manifest.json", manifest.epoch),
                json,
            )
            .await?;
        crate::checkpoint::failpoint::hit("before_checkpoint_pointer");
        self.put("_latest", manifest.epoch.to_string().into_bytes())
            .await?;
        self.drop_memos(manifest.epoch).await?;
        self.prune().await?;
        Ok(size)
    }

    async fn prune(&self) -> Result<()> {
        let kept = self.numbered("checkpoints").await?;
        if kept.len() <= self.keep {
            return Ok(());
        }
        let cut = kept.len() - self.keep;
        let oldest_kept = kept[cut];
        for epoch in &kept[..cut] {
            let prefix = self.path(&format!("checkpoints/{epoch:020}"));
            let files: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(io(format!("listing {}", self.display)))?;
            // The manifest goes first: a half-deleted checkpoint is simply not valid.
            let mut paths: Vec<Path> = files.into_iter().map(|m| m.location).collect();
            paths.sort_by_key(|p| !p.as_ref().ends_with("manifest.json"));
            for path in paths {
                self.delete(&path).await?;
            }
        }
        for epoch in self.numbered("epochs").await? {
            if epoch <= oldest_kept {
                self.delete(&self.path(&format!("epochs/{epoch:020}.json")))
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io(format!("deleting {path}"))(e)),
        }
    }

    /// The newest valid checkpoint: the one `_latest` names, else the newest with a readable
    /// manifest.
    ///
    /// # Errors
    /// Store failures, and a manifest written by an incompatible version.
    pub async fn latest(&self) -> Result<Option<Manifest>> {
        let pointed = self
            .get("_latest")
            .await?
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok());
        let mut candidates = self.numbered("checkpoints").await?;
        candidates.reverse();
        if let Some(p) = pointed {
            candidates.retain(|e| *e != p);
            candidates.insert(0, p);
        }
        for epoch in candidates {
            let name = format!("checkpoints/{epoch:020}/manifest.json");
            let Some(bytes) = self.get(&name).await? else {
                continue;
            };
            let manifest: Manifest = match serde_json::from_slice(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        "skipping unreadable checkpoint {}/{name}: {e}",
                        self.display
                    );
                    continue;
                }
            };
            if !(OLDEST_FORMAT..=FORMAT).contains(&manifest.format) {
                return Err(EngineError::Checkpoint(format!(
                    "{}/{name} has format {}, this build reads formats {OLDEST_FORMAT} to {FORMAT}; restart with --from-scratch",
                    self.display, manifest.format
                )));
            }
            return Ok(Some(manifest));
        }
        Ok(None)
    }

    /// Deletes every checkpoint and epoch log (`--from-scratch`).
    ///
    /// # Errors
    /// Store failures.
    pub async fn clear(&self) -> Result<()> {
        let files: Vec<_> = self
            .store
            .list(Some(&self.root))
            .try_collect()
            .await
            .map_err(io(format!("listing {}", self.display)))?;
        for meta in files {
            self.delete(&meta.location).await?;
        }
        Ok(())
    }
}

//! [`FileSink`]: one file per epoch in a directory, replaced when the epoch is written again.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::parquet::arrow::ArrowWriter;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::FileFormat;
use super::options::FileOptions;
use crate::error::{ConnectorError, Result};
use crate::location::Location;
use crate::traits::Sink;

/// Writes epoch `n` as `part-{n:020}.{ext}` in the sink's directory.
///
/// Each epoch is encoded in memory and stored with one `put`, which is atomic (the local file
/// system writes a temporary file and renames it), so a reader never sees half a file and a
/// replayed epoch overwrites its file instead of adding a duplicate. Epochs without rows write
/// nothing.
#[derive(Debug)]
pub struct FileSink {
    table: String,
    format: FileFormat,
    options: FileOptions,
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    dir: Path,
    /// The directory as a URL, for messages (`file:///data/out/demand_1m`).
    shown: String,
    files_written: u64,
    instance: Option<String>,
}

impl FileSink {
    /// A sink for `table` writing `format` files with `schema` into the directory `location`.
    pub fn new(
        table: &str,
        format: FileFormat,
        options: FileOptions,
        schema: SchemaRef,
        location: Location,
    ) -> Self {
        let shown = location.dir_url().to_string();
        let (store, dir) = location.into_parts();
        Self {
            table: table.to_string(),
            format,
            options,
            schema,
            store,
            dir,
            shown,
            files_written: 0,
            instance: None,
        }
    }

    /// Names this writer's files for its share of the pipeline (`part-<instance>-<epoch>`), so
    /// several writers (group mode: one per source partition) share one directory.
    #[must_use]
    pub fn with_instance(mut self, instance: Option<String>) -> Self {
        self.instance = instance;
        self
    }

    /// The file name epoch `epoch` is written to.
    pub fn part_file_name(epoch: u64, format: FileFormat) -> String {
        format!("part-{epoch:020}.{}", format.extension())
    }

    /// The file name epoch `epoch` of share `instance` is written to.
    fn file_name(&self, epoch: u64) -> String {
        match &self.instance {
            Some(instance) => format!("part-{instance}-{epoch:020}.{}", self.format.extension()),
            None => Self::part_file_name(epoch, self.format),
        }
    }

    /// Files written (or rewritten) so far.
    pub fn files_written(&self) -> u64 {
        self.files_written
    }

    /// Batches with the sink's schema: the engine's batches may differ only in field
    /// nullability or metadata, which the writers would otherwise reject.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.schema() == self.schema {
            return Ok(batch.clone());
        }
        RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(|e| {
            ConnectorError::Internal(format!(
                "table '{}': a batch does not match the sink schema: {e}",
                self.table
            ))
        })
    }

    fn encode(&self, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        // Encoding fails on types the format cannot hold (nested columns in CSV): a user error.
        let fail = |e: &dyn std::fmt::Display| {
            ConnectorError::config(
                &self.table,
                format!("cannot write rows as {}: {e}", self.format.kind()),
            )
        };
        let mut out = Vec::new();
        match self.format {
            FileFormat::Parquet => {
                let mut writer = ArrowWriter::try_new(&mut out, self.schema.clone(), None)
                    .map_err(|e| fail(&e))?;
                for batch in batches {
                    writer.write(&self.conform(batch)?).map_err(|e| fail(&e))?;
                }
                writer.close().map_err(|e| fail(&e))?;
            }
            FileFormat::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(self.options.has_header)
                    .with_delimiter(self.options.delimiter)
                    .build(&mut out);
                for batch in batches {
                    writer.write(&self.conform(batch)?).map_err(|e| fail(&e))?;
                }
            }
            FileFormat::Json => {
                let mut writer = crate::codec::json_lines_writer(&mut out);
                for batch in batches {
                    writer.write(&self.conform(batch)?).map_err(|e| fail(&e))?;
                }
                writer.finish().map_err(|e| fail(&e))?;
            }
        }
        Ok(out)
    }
}

impl FileSink {
    /// The epochs of the part files in the directory, with their paths: this writer's only
    /// (`mine`), or every writer's.
    async fn part_files(&self, mine: bool) -> Result<Vec<(u64, Path)>> {
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.dir))
            .try_collect()
            .await
            .map_err(|e| ConnectorError::External {
                table: self.table.clone(),
                message: format!("cannot list '{}': {e}", self.dir),
                retryable: true,
            })?;
        let suffix = format!(".{}", self.format.extension());
        let own = match &self.instance {
            Some(instance) => format!("part-{instance}-"),
            None => "part-".to_string(),
        };
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_string();
                let stem = name.strip_prefix("part-")?.strip_suffix(suffix.as_str())?;
                if mine && !name.starts_with(&own) {
                    return None;
                }
                let epoch = stem.rsplit('-').next()?;
                let epoch = epoch.parse::<u64>().ok()?;
                if mine && self.instance.is_none() && stem.contains('-') {
                    return None;
                }
                Some((epoch, meta.location))
            })
            .collect())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn holds_rows(&mut self) -> Result<bool> {
        Ok(!self.part_files(false).await?.is_empty())
    }

    async fn missing(&mut self, epochs: u64, _last: u64, through: u64) -> Result<Option<String>> {
        let held = self.part_files(true).await?;
        let held = held.iter().filter(|(e, _)| *e <= through).count() as u64;
        Ok((held < epochs).then(|| {
            format!(
                "{} holds the files of {held} of the {epochs} epochs written to it",
                self.shown
            )
        }))
    }

    /// Removes every part file of the directory (every writer's).
    async fn truncate(&mut self) -> Result<()> {
        for (_, path) in self.part_files(false).await? {
            self.store
                .delete(&path)
                .await
                .map_err(|e| ConnectorError::External {
                    table: self.table.clone(),
                    message: format!("cannot remove '{path}': {e}"),
                    retryable: true,
                })?;
        }
        Ok(())
    }

    async fn write_epoch(&mut self, epoch: u64, batches: &[RecordBatch]) -> Result<()> {
        let batches: Vec<RecordBatch> = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .cloned()
            .collect();
        if batches.is_empty() {
            return Ok(());
        }
        let bytes = self.encode(&batches)?;
        let path = self.dir.clone().join(self.file_name(epoch).as_str());
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| ConnectorError::External {
                table: self.table.clone(),
                message: format!("cannot write '{path}': {e}"),
                retryable: true,
            })?;
        self.files_written += 1;
        Ok(())
    }
}

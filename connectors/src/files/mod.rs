//! `STORED AS PARQUET | CSV | JSON`: files in a directory (or one file) through `object_store`.
//!
//! ```sql
//! CREATE EXTERNAL TABLE trips STORED AS PARQUET LOCATION 'data/trips/';
//! CREATE EXTERNAL TABLE demand STORED AS CSV LOCATION 'out/demand' OPTIONS ('delimiter' '|');
//! ```
//!
//! As a source, the files are read in path order through DataFusion (schema declared, or
//! inferred from the files). As a bounded batch input, the table is a DataFusion
//! [`ListingTable`](datafusion::datasource::listing::ListingTable), scanned in parallel. As a
//! sink, `LOCATION` is a directory receiving one `part-{epoch:020}.{ext}` file per epoch.

mod listing;
mod options;
mod parallel;
mod records;
mod sink;
mod sorted;
mod source;

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormat as DataFusionFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use object_store::ObjectMeta;
use volley_sql::{OptionSpec, TableDecl};

pub use options::{
    CSV_OPTIONS, DEFAULT_SORT_MEMORY, FileOptions, JSON_OPTIONS, PARQUET_OPTIONS, ReplayOrder,
    parse_size,
};
pub use records::{RecordFileSource, RecordFormat};
pub use sink::FileSink;
pub use sorted::{OrderCheck, SortedSource, in_event_time_order};
pub use source::FileSource;

use crate::error::{ConnectorError, Result};
use crate::location::Location;
use crate::traits::{Connector, Sink, SinkContext, Source};
use listing::Listing;

/// A file format a table can be stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma- (or `delimiter`-) separated values.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
}

impl FileFormat {
    /// Every file format, one connector each.
    pub const ALL: [FileFormat; 3] = [FileFormat::Parquet, FileFormat::Csv, FileFormat::Json];

    /// The `STORED AS` kind.
    pub fn kind(self) -> &'static str {
        match self {
            FileFormat::Parquet => "PARQUET",
            FileFormat::Csv => "CSV",
            FileFormat::Json => "JSON",
        }
    }

    /// The file extension, without a dot.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }

    /// The format for a `STORED AS` kind (case-insensitive).
    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.kind().eq_ignore_ascii_case(kind))
    }

    /// Options this format accepts beyond the common ones.
    pub fn option_specs(self) -> &'static [OptionSpec] {
        match self {
            FileFormat::Csv => CSV_OPTIONS,
            FileFormat::Json => JSON_OPTIONS,
            FileFormat::Parquet => PARQUET_OPTIONS,
        }
    }

    /// DataFusion's reader for this format, configured by `options`.
    pub fn datafusion_format(self, options: &FileOptions) -> Arc<dyn DataFusionFormat> {
        match self {
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Csv => Arc::new(
                CsvFormat::default()
                    .with_has_header(options.has_header)
                    .with_delimiter(options.delimiter),
            ),
            FileFormat::Json => Arc::new(JsonFormat::default()),
        }
    }

    /// DataFusion listing options reading `.{ext}` files of this format.
    pub fn listing_options(self, options: &FileOptions) -> ListingOptions {
        ListingOptions::new(self.datafusion_format(options))
            .with_file_extension(format!(".{}", self.extension()))
    }
}

/// The connector for one [`FileFormat`].
#[derive(Debug, Clone, Copy)]
pub struct FileConnector {
    format: FileFormat,
}

impl FileConnector {
    /// The connector for `format`.
    pub fn new(format: FileFormat) -> Self {
        Self { format }
    }

    /// Its format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    async fn listing(&self, table: &TableDecl) -> Result<Listing> {
        let options = FileOptions::from_options(&table.options)?;
        let location = Location::resolve(&table.name, &table.location)?;
        Listing::new(&table.name, location, self.format, options).await
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn kind(&self) -> &'static str {
        self.format.kind()
    }

    fn options(&self) -> &'static [OptionSpec] {
        self.format.option_specs()
    }

    /// Infers the schema from the files; `None` when `LOCATION` holds no file of this format
    /// yet (a sink whose directory does not exist, for instance).
    async fn infer_schema(&self, table: &TableDecl) -> Result<Option<SchemaRef>> {
        let listing = self.listing(table).await?;
        if !listing.has_files(&table.name).await? {
            return Ok(None);
        }
        listing.infer_schema(&table.name).await.map(Some)
    }

    /// Parquet files stream through DataFusion's reader; CSV and JSON files are read record
    /// by record ([`RecordFileSource`]), so a bad record is a dead letter, not a failed run.
    /// A table with a watermark is replayed in event-time order ([`SortedSource`]) unless its
    /// `replay_order` is `'file'`.
    async fn open_source(&self, table: &TableDecl, schema: SchemaRef) -> Result<Box<dyn Source>> {
        let options = FileOptions::from_options(&table.options)?;
        let listing = self.listing(table).await?;
        let files = checked_files(&listing, table, self.format).await?;
        let mut check: Option<OrderCheck> = None;
        let inner: Box<dyn Source> = match self.format {
            FileFormat::Parquet => {
                let ctx = listing.ordered_session();
                check_declared_types(&listing, &ctx, table, &schema, &files).await?;
                let provider = Arc::new(listing.table(&table.name, schema.clone())?);
                let cannot_read = |e: datafusion::error::DataFusionError| {
                    ConnectorError::external(
                        &table.name,
                        format!("cannot read LOCATION '{}': {e}", table.location),
                    )
                };
                let store = Arc::clone(&listing.location.store);
                let frame = ctx.read_table(provider.clone()).map_err(cannot_read)?;
                let stream = row_groups_in_parallel(frame, Arc::clone(&store))
                    .await
                    .map_err(cannot_read)?;
                if let Some(watermark) = &table.watermark {
                    // Reading the event-time column alone tells whether the files need sorting.
                    let (name, column) = (table.name.clone(), watermark.column.clone());
                    let store = Arc::clone(&store);
                    check = Some(Box::pin(async move {
                        let stream = async {
                            let frame = ctx
                                .read_table(provider)?
                                .select_columns(&[column.as_str()])?;
                            row_groups_in_parallel(frame, store).await
                        }
                        .await
                        .map_err(|e| {
                            ConnectorError::external(
                                &name,
                                format!("reading event-time column '{column}': {e}"),
                            )
                        })?;
                        in_event_time_order(&name, stream).await
                    }));
                }
                let source = FileSource::new(&table.name, schema.clone(), stream);
                // Rows read in event-time order (or with no event time) are never late, so no
                // row reaches a dead letter: the columns no query reads need not be decoded.
                let in_order =
                    table.watermark.is_none() || options.replay_order == ReplayOrder::EventTime;
                if in_order {
                    let (ctx, names) = (listing.ordered_session(), schema.clone());
                    let store = Arc::clone(&store);
                    let provider = Arc::new(listing.table(&table.name, schema.clone())?);
                    Box::new(source.with_reopen(Box::new(move |columns: Vec<usize>| {
                        Box::pin(async move {
                            let read: Vec<datafusion::prelude::Expr> = columns
                                .iter()
                                .map(|&c| {
                                    datafusion::prelude::Expr::Column(
                                        datafusion::common::Column::new_unqualified(
                                            names.field(c).name(),
                                        ),
                                    )
                                })
                                .collect();
                            let frame = ctx.read_table(provider)?.select(read)?;
                            row_groups_in_parallel(frame, store).await
                        })
                    })))
                } else {
                    Box::new(source)
                }
            }
            FileFormat::Csv | FileFormat::Json => {
                let format = if self.format == FileFormat::Csv {
                    RecordFormat::Csv {
                        delimiter: options.delimiter,
                        has_header: options.has_header,
                    }
                } else {
                    RecordFormat::Json
                };
                Box::new(RecordFileSource::new(
                    &table.name,
                    schema,
                    format,
                    options.timestamp_unit,
                    Arc::clone(&listing.location.store),
                    files.into_iter().map(|meta| meta.location).collect(),
                ))
            }
        };
        match &table.watermark {
            Some(watermark) if options.replay_order == ReplayOrder::EventTime => {
                Ok(Box::new(SortedSource::new(
                    &table.name,
                    inner,
                    &watermark.column,
                    options.sort_memory,
                    check,
                )))
            }
            _ => Ok(inner),
        }
    }

    /// CSV and JSON tables are read for `volley batch` by the same [`RecordFileSource`] as in
    /// streaming (same options, same dead letters).
    fn batch_reads_source(&self, _table: &TableDecl) -> bool {
        self.format != FileFormat::Parquet
    }

    async fn open_sink(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
        context: &SinkContext,
    ) -> Result<Box<dyn Sink>> {
        let options = FileOptions::from_options(&table.options)?;
        let location = Location::resolve_sink_dir(&table.name, &table.location).await?;
        Ok(Box::new(
            FileSink::new(&table.name, self.format, options, schema, location)
                .with_instance(context.instance.clone()),
        ))
    }

    async fn batch_table(
        &self,
        table: &TableDecl,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let listing = self.listing(table).await?;
        let files = checked_files(&listing, table, self.format).await?;
        if self.format == FileFormat::Parquet {
            let ctx = listing.ordered_session();
            check_declared_types(&listing, &ctx, table, &schema, &files).await?;
        }
        listing.provider(&table.name, schema)
    }
}

/// Runs `frame` (a scan of Parquet files) decoding several row groups at once, one per core
/// this process may use, rows in file order ([`parallel::ordered_row_groups`]).
async fn row_groups_in_parallel(
    frame: datafusion::dataframe::DataFrame,
    store: Arc<dyn object_store::ObjectStore>,
) -> datafusion::error::Result<datafusion::execution::SendableRecordBatchStream> {
    let task = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await?;
    parallel::ordered_row_groups(plan, task, store, parallel::default_parallelism()).await
}

/// The files a source table reads: at least one, and no empty Parquet file.
async fn checked_files(
    listing: &Listing,
    table: &TableDecl,
    format: FileFormat,
) -> Result<Vec<ObjectMeta>> {
    let files = listing.files(&table.name).await?;
    if format == FileFormat::Parquet
        && let Some(meta) = files.iter().find(|meta| meta.size == 0)
    {
        return Err(ConnectorError::config(
            &table.name,
            format!(
                "file '{}' is empty (0 bytes), so it is not a Parquet file",
                meta.location
            ),
        ));
    }
    Ok(files)
}

/// When the table declares its columns, refuses a file whose column would not convert exactly
/// to its declared type (DataFusion's Parquet reader would cast it silently: 871.47 read as
/// 871). An inferred schema was merged from these very files, so it needs no check.
async fn check_declared_types(
    listing: &Listing,
    ctx: &SessionContext,
    table: &TableDecl,
    schema: &Schema,
    files: &[ObjectMeta],
) -> Result<()> {
    if table.declared_schema.is_none() {
        return Ok(());
    }
    listing
        .check_declared_types(&table.name, ctx, schema, files)
        .await
}

/// Every row a [`FileSink`] wrote into `location`, part files in epoch order, with the schema
/// inferred from the files and the format's default options. Empty when there are no files.
///
/// # Errors
/// [`ConnectorError`] when the location is invalid or the files cannot be read.
pub async fn read_sink_dir(location: &str, format: FileFormat) -> Result<Vec<RecordBatch>> {
    let table = location;
    let resolved = Location::resolve(table, location)?;
    let listing = Listing::new(table, resolved, format, FileOptions::default()).await?;
    if !listing.has_files(table).await? {
        return Ok(Vec::new());
    }
    let schema = listing.infer_schema(table).await?;
    let provider = listing.table(table, schema)?;
    let ctx = listing.ordered_session();
    async { ctx.read_table(Arc::new(provider))?.collect().await }
        .await
        .map_err(|e| ConnectorError::external(table, format!("cannot read files: {e}")))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sorted_tests;

#[cfg(test)]
mod parallel_tests;

//! How a file table is read through DataFusion: a [`ListingTable`] over the `LOCATION`
//! (one file, or every file of the format in a directory).

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{Expr, SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use super::FileFormat;
use super::options::FileOptions;
use crate::error::{ConnectorError, Result};
use crate::location::Location;
use crate::types::check_declared;

/// What DataFusion lists for a table: the URL, and the format with its file-name suffix.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) location: Location,
    pub(crate) url: ListingTableUrl,
    pub(crate) options: ListingOptions,
    /// Whether `LOCATION` is one file (rather than a directory).
    pub(crate) is_file: bool,
}

impl Listing {
    /// A single file is read whatever its name; a directory contributes its `.{ext}` files.
    pub(crate) async fn new(
        table: &str,
        location: Location,
        format: FileFormat,
        opts: FileOptions,
    ) -> Result<Self> {
        let is_file = match location.store.head(&location.path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => {
                return Err(ConnectorError::external(
                    table,
                    format!("cannot read LOCATION '{}': {e}", location.url),
                ));
            }
        };
        let (url, suffix) = if is_file {
            (location.url.clone(), String::new())
        } else {
            (location.dir_url(), format!(".{}", format.extension()))
        };
        let url = ListingTableUrl::parse(url.as_str()).map_err(|e| {
            ConnectorError::config(table, format!("LOCATION '{url}' cannot be listed: {e}"))
        })?;
        let options = format.listing_options(&opts).with_file_extension(suffix);
        Ok(Self {
            location,
            url,
            options,
            is_file,
        })
    }

    /// Whether any file would be read.
    pub(crate) async fn has_files(&self, table: &str) -> Result<bool> {
        if self.is_file {
            return Ok(true);
        }
        Ok(!self.listed(table, Some(1)).await?.is_empty())
    }

    /// The directory's files with the table's extension, up to `limit` of them, in listing
    /// order.
    async fn listed(&self, table: &str, limit: Option<usize>) -> Result<Vec<ObjectMeta>> {
        let suffix = self.options.file_extension.as_str();
        let mut out = Vec::new();
        let mut files = self.location.store.list(Some(&self.location.path));
        while let Some(meta) = files.try_next().await.map_err(|e| {
            ConnectorError::external(
                table,
                format!("cannot list LOCATION '{}': {e}", self.location.url),
            )
        })? {
            if meta.location.as_ref().ends_with(suffix) {
                out.push(meta);
                if limit.is_some_and(|n| out.len() >= n) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The files a table reads, in path order.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the table and LOCATION when it matches no file (a
    /// missing input is an error, not zero rows), and listing failures.
    pub(crate) async fn files(&self, table: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        if self.is_file {
            let meta = self
                .location
                .store
                .head(&self.location.path)
                .await
                .map_err(|e| {
                    ConnectorError::external(
                        table,
                        format!("cannot read LOCATION '{}': {e}", self.location.url),
                    )
                })?;
            out.push(meta);
        } else {
            out = self.listed(table, None).await?;
            out.sort_by(|a, b| a.location.cmp(&b.location));
        }
        if out.is_empty() {
            return Err(ConnectorError::config(
                table,
                format!(
                    "LOCATION '{}' matches no {} file: it does not exist, or the directory holds none (a missing input is an error, not zero rows)",
                    self.location.url,
                    if self.options.file_extension.is_empty() {
                        ""
                    } else {
                        self.options.file_extension.as_str()
                    }
                ),
            ));
        }
        Ok(out)
    }

    /// A session reading in file order on one partition, so a source's row order (and thus
    /// its positions) is the same on every run. Files are read in path order.
    pub(crate) fn ordered_session(&self) -> SessionContext {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        self.location.register(&ctx);
        ctx
    }

    /// The schema DataFusion infers from the files.
    pub(crate) async fn infer_schema(&self, table: &str) -> Result<SchemaRef> {
        let ctx = self.ordered_session();
        self.options
            .infer_schema(&ctx.state(), &self.url)
            .await
            .map_err(|e| {
                ConnectorError::external(
                    table,
                    format!("cannot infer a schema from LOCATION '{}': {e}", self.url),
                )
            })
    }

    /// Checks each of `files` against the declared `schema`: every declared column a file
    /// holds must convert exactly to its declared type ([`check_declared`]), since DataFusion
    /// would cast it silently. Each file's schema is read as DataFusion reads it (a Parquet
    /// footer), up to 32 files at a time, into `ctx`'s metadata cache, so reading the files
    /// through `ctx` afterwards does not fetch the footers again.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the table, column, file and both types;
    /// [`ConnectorError::External`] when a file's schema cannot be read.
    pub(crate) async fn check_declared_types(
        &self,
        table: &str,
        ctx: &SessionContext,
        schema: &Schema,
        files: &[ObjectMeta],
    ) -> Result<()> {
        let state = ctx.state();
        let (state, format, store) = (&state, &self.options.format, &self.location.store);
        let mut found = futures::stream::iter(files.iter().cloned())
            .map(|meta: ObjectMeta| async move {
                let found = format
                    .infer_schema(state, store, std::slice::from_ref(&meta))
                    .await;
                (meta, found)
            })
            .buffered(32);
        while let Some((meta, found)) = found.next().await {
            let file = self.shown(&meta.location);
            let found = found.map_err(|e| {
                ConnectorError::external(
                    table,
                    format!("cannot read the schema of file '{file}': {e}"),
                )
            })?;
            check_declared(table, &format!("file '{file}'"), &found, schema)?;
        }
        Ok(())
    }

    /// A file's path as the user knows it: relative to the working directory when it is
    /// under it, else absolute (a URL for other stores).
    fn shown(&self, path: &object_store::path::Path) -> String {
        if self.location.url.scheme() != "file" {
            return format!("{}{path}", self.location.store_url());
        }
        let absolute = std::path::PathBuf::from(format!("/{path}"));
        let relative = std::env::current_dir().ok().and_then(|cwd| {
            absolute
                .strip_prefix(cwd)
                .ok()
                .map(std::path::Path::to_path_buf)
        });
        relative.unwrap_or(absolute).display().to_string()
    }

    /// The DataFusion table over these files with `schema`.
    pub(crate) fn table(&self, table: &str, schema: SchemaRef) -> Result<ListingTable> {
        let config = ListingTableConfig::new(self.url.clone())
            .with_listing_options(self.options.clone())
            .with_schema(schema);
        ListingTable::try_new(config).map_err(|e| {
            ConnectorError::config(table, format!("cannot read LOCATION '{}': {e}", self.url))
        })
    }

    /// The table as a provider usable from any session: stores other than the local file
    /// system are registered with the querying session on each scan.
    pub(crate) fn provider(
        &self,
        table: &str,
        schema: SchemaRef,
    ) -> Result<Arc<dyn TableProvider>> {
        let listing = self.table(table, schema)?;
        if self.location.url.scheme() == "file" {
            return Ok(Arc::new(listing));
        }
        Ok(Arc::new(StoreRegisteringTable {
            inner: listing,
            store_url: self.location.store_url(),
            store: Arc::clone(&self.location.store),
        }))
    }
}

/// A [`ListingTable`] over a store the querying session may not know (`memory://`): registers
/// the store with the session's runtime before every scan, then delegates.
#[derive(Debug)]
struct StoreRegisteringTable {
    inner: ListingTable,
    store_url: Url,
    store: Arc<dyn ObjectStore>,
}

impl StoreRegisteringTable {
    fn register(&self, state: &dyn Session) {
        state
            .runtime_env()
            .register_object_store(&self.store_url, Arc::clone(&self.store));
    }
}

#[async_trait]
impl TableProvider for StoreRegisteringTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        self.register(state);
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> datafusion::common::Result<ScanResult> {
        self.register(state);
        self.inner.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}

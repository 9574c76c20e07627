//! Parquet files decoded a row group per task, several at once, rows still in file order.
//!
//! ```text
//!   plan (one DataSourceExec over the files, one partition)
//!     ─▶ one plan per (file, row group), in path and row-group order  (ParquetAccessPlan)
//!     ─▶ up to `parallel` of them decoded at once, each on its own task
//!     ─▶ their batches, row group after row group: the same rows in the same order as one scan
//! ```
//!
//! A source's positions count rows in file order, so the order must not depend on how many
//! row groups were decoded at once; it does not, since results are taken in the order the
//! row groups were started. At most `parallel` row groups are decoded and held at a time.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

/// How many row groups to decode at once: the cores this process may run on.
pub(crate) fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `plan` (a scan of Parquet files in one partition) a row group at a time, `parallel`
/// row groups at once, yielding the rows in the order a plain run of `plan` yields them.
/// Runs `plan` as it is when it is not such a scan, when `parallel` is 1 or when there is only
/// one row group.
///
/// # Errors
/// When a file's footer cannot be read, or the plan cannot run.
pub(crate) async fn ordered_row_groups(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    store: Arc<dyn ObjectStore>,
    parallel: usize,
) -> Result<SendableRecordBatchStream> {
    let Some(config) = single_file_scan(&plan) else {
        tracing::debug!(
            "not one Parquet scan: {}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(false)
        );
        return plan.execute(0, task);
    };
    if parallel <= 1 {
        return plan.execute(0, task);
    }
    let mut units = Vec::new();
    for file in config.file_groups.iter().flat_map(FileGroup::iter) {
        // A byte range (one partition's share of a file) still applies to each row group's
        // scan; an access plan of the file's own would be replaced, so such a scan runs as is.
        if file.extension::<ParquetAccessPlan>().is_some() {
            return plan.execute(0, task);
        }
        let groups = row_group_count(&store, &task, file).await?;
        for group in 0..groups {
            let mut access = ParquetAccessPlan::new_none(groups);
            access.scan(group);
            units.push(file.clone().with_extension(access));
        }
    }
    tracing::debug!(
        row_groups = units.len(),
        parallel,
        "Parquet row groups decoded at once"
    );
    if units.len() <= 1 {
        return plan.execute(0, task);
    }
    let schema = plan.schema();
    let runs = units.into_iter().map(move |file| {
        let unit = with_files(&plan, &config, file);
        let task = Arc::clone(&task);
        async move {
            let unit = unit?;
            tokio::spawn(collect(unit, task))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        }
    });
    let batches = futures::stream::iter(runs)
        .buffered(parallel)
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

/// The scan's configuration when `plan` holds exactly one Parquet file scan, in one
/// partition.
fn single_file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<FileScanConfig> {
    let mut found = Vec::new();
    plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
            let source: &dyn std::any::Any = exec.data_source().as_ref();
            found.push(source.downcast_ref::<FileScanConfig>().cloned());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .ok()?;
    let [Some(config)] = <[Option<FileScanConfig>; 1]>::try_from(found).ok()? else {
        return None;
    };
    let parquet = config.file_source().file_type() == "parquet";
    (parquet && config.file_groups.len() == 1 && plan.output_partitioning().partition_count() == 1)
        .then_some(config)
}

/// `plan` with its file scan reading `file` only.
fn with_files(
    plan: &Arc<dyn ExecutionPlan>,
    config: &FileScanConfig,
    file: PartitionedFile,
) -> Result<Arc<dyn ExecutionPlan>> {
    let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(
        FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(vec![file])])
            .build(),
    );
    Arc::clone(plan)
        .transform_up(|node| {
            if node.downcast_ref::<DataSourceExec>().is_some() {
                Ok(Transformed::yes(Arc::clone(&scan)))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
}

/// How many row groups `file` has, from its footer (the one DataFusion's scan caches).
async fn row_group_count(
    store: &Arc<dyn ObjectStore>,
    task: &TaskContext,
    file: &PartitionedFile,
) -> Result<usize> {
    let cache = task.runtime_env().cache_manager.get_file_metadata_cache();
    let metadata = DFParquetMetadata::new(store.as_ref(), &file.object_meta)
        .with_file_metadata_cache(Some(cache))
        .fetch_metadata()
        .await?;
    Ok(metadata.num_row_groups())
}

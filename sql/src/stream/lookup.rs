//! Enrichment (lookup) joins: a stream joined with a bounded table that has no watermark.
//!
//! The table's rows live in a [`LookupData`] the engine loads (and, for a refreshed Delta
//! table, replaces between epochs). A query reads it through a [`LookupScanExec`], which must
//! be the build side of a hash join in `CollectLeft` mode: DataFusion builds that hash table
//! once per plan instance and probes it with every epoch's rows, so the table is hashed once,
//! not once per epoch. When its rows are replaced, [`reset_lookup_joins`] gives the plan fresh
//! joins, which hash the new rows on their next run.
//!
//! ```text
//!   HashJoinExec(CollectLeft, Inner | Right | RightSemi | RightAnti | RightMark)
//!     build:  … LookupScanExec(table)      hashed once
//!     probe:  … EpochSourceExec(stream)    every epoch
//! ```
//!
//! A join that keeps the table's unmatched rows (LEFT / FULL with the table preserved, or
//! semi / anti joins that return the table's rows) would depend on every row the stream will
//! ever bring, so it is refused.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};

use super::leaf::EpochSourceExec;
use crate::error::{Result, SqlError, StatementRef};

/// The rows of a lookup table, and which version of it they are (Delta tables).
#[derive(Debug, Clone, Default)]
pub struct LookupContent {
    /// Every row.
    pub batches: Vec<RecordBatch>,
    /// The table version the rows are (a Delta table's), when it has versions.
    pub version: Option<u64>,
}

/// A lookup table's rows, shared by the plans that join it and the engine that loads them.
#[derive(Debug)]
pub struct LookupData {
    name: String,
    schema: SchemaRef,
    content: RwLock<LookupContent>,
    scans: AtomicUsize,
}

impl LookupData {
    /// The table `name` with columns `schema`, holding `content`.
    pub fn new(name: &str, schema: SchemaRef, content: LookupContent) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            schema,
            content: RwLock::new(content),
            scans: AtomicUsize::new(0),
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Replaces the rows. Plans that joined the old rows keep them until
    /// [`reset_lookup_joins`].
    pub fn replace(&self, content: LookupContent) {
        *self.content.write().unwrap_or_else(|e| e.into_inner()) = content;
    }

    /// The version held.
    pub fn version(&self) -> Option<u64> {
        self.read().version
    }

    /// How many times a join has read the rows (to hash them).
    pub fn scans(&self) -> usize {
        self.scans.load(Ordering::Relaxed)
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.read().batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LookupContent> {
        self.content.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lookup table as DataFusion sees it.
#[derive(Debug)]
pub struct LookupTable {
    data: Arc<LookupData>,
}

impl LookupTable {
    /// The table over `data`.
    pub fn new(data: Arc<LookupData>) -> Self {
        Self { data }
    }
}

#[async_trait]
impl TableProvider for LookupTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.data.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(LookupScanExec::new(
            Arc::clone(&self.data),
            projection.cloned(),
        )?))
    }
}

/// Streams a lookup table's current rows (projected), in one partition.
#[derive(Debug)]
pub struct LookupScanExec {
    data: Arc<LookupData>,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl LookupScanExec {
    /// A scan of `data`; `projection` picks its columns.
    ///
    /// # Errors
    /// A projection index outside the table.
    pub fn new(data: Arc<LookupData>, projection: Option<Vec<usize>>) -> DfResult<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(data.schema.project(p)?),
            None => Arc::clone(&data.schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            data,
            projection,
            properties: Arc::new(properties),
        })
    }

    /// The table scanned.
    pub fn table(&self) -> &str {
        &self.data.name
    }
}

impl DisplayAs for LookupScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LookupScanExec: table={}", self.data.name)?;
        if let Some(p) = &self.projection {
            write!(f, ", projection={p:?}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupScanExec {
    fn name(&self) -> &str {
        "LookupScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "LookupScanExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "LookupScanExec has one partition, asked for {partition}"
            )));
        }
        self.data.scans.fetch_add(1, Ordering::Relaxed);
        let batches = self
            .data
            .read()
            .batches
            .iter()
            .map(|b| match &self.projection {
                Some(p) => b.project(p),
                None => Ok(b.clone()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let stream = MemoryStream::try_new(
            batches,
            Arc::clone(self.properties.eq_properties.schema()),
            None,
        )?;
        Ok(Box::pin(stream))
    }
}

/// Whether `plan` reads a lookup table, and whether it reads a stream.
fn reads(plan: &Arc<dyn ExecutionPlan>) -> (bool, bool) {
    let mut lookup = false;
    let mut stream = false;
    let _ = plan.apply(|node| {
        lookup |= node.downcast_ref::<LookupScanExec>().is_some();
        stream |= node.downcast_ref::<EpochSourceExec>().is_some();
        Ok(TreeNodeRecursion::Continue)
    });
    (lookup, stream)
}

/// The lookup tables `plan` reads.
pub fn lookup_tables_read(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<LookupScanExec>()
            && !out.iter().any(|t| t == scan.table())
        {
            out.push(scan.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// What the user calls a bounded side, for messages: `lookup table t` and `t`, or `a constant
/// table (VALUES …)` and `the constant table` when it reads no lookup table.
fn bounded_name(plan: &Arc<dyn ExecutionPlan>) -> (String, String) {
    let tables = lookup_tables_read(plan);
    if tables.is_empty() {
        (
            "a constant table (VALUES …)".to_string(),
            "the constant table".to_string(),
        )
    } else {
        let names = tables.join(", ");
        (format!("lookup table {names}"), names)
    }
}

/// The build side of `node` when it is a lookup join (a hash join whose build side reads no
/// stream and whose probe side does): that side is bounded, run once, not streamed.
pub fn lookup_build_side(node: &dyn ExecutionPlan) -> Option<&Arc<dyn ExecutionPlan>> {
    let join = node.downcast_ref::<HashJoinExec>()?;
    let (_, build_streams) = reads(join.left());
    let (_, probe_streams) = reads(join.right());
    (!build_streams && probe_streams && join.mode == PartitionMode::CollectLeft)
        .then_some(join.left())
}

/// `plan` with every hash join between a stream and a lookup table turned so the table is
/// the build side, hashed once (`CollectLeft`), and checked to keep no unmatched table rows.
///
/// # Errors
/// A join that would keep the table's unmatched rows, a null-aware `NOT IN`, and DataFusion
/// failures rebuilding a join.
pub fn orient_lookup_joins(
    plan: Arc<dyn ExecutionPlan>,
    at: StatementRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut refused: Option<SqlError> = None;
    let oriented = plan.transform_up(|node| {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        // A side that reads no stream is bounded: a lookup table, or a constant table (VALUES,
        // generate_series, unnest of literal arrays, CTEs over them), run once as in batch.
        let (_, left_stream) = reads(join.left());
        let (_, right_stream) = reads(join.right());
        let turned: Arc<dyn ExecutionPlan> = if !right_stream && left_stream {
            if join.null_aware {
                refused.get_or_insert(SqlError::Unsupported {
                    at,
                    message: format!(
                        "NOT IN (SELECT … FROM {}) is not streamed: NULL in the table would turn every stream row's answer, so the join needs the stream on its build side. Write NOT EXISTS (SELECT 1 FROM … WHERE key = stream.key) instead, adding `AND stream.key IS NOT NULL` if NULL keys must be left out",
                        bounded_name(join.right()).1
                    ),
                });
                return Ok(Transformed::no(node));
            }
            let once = join
                .builder()
                .with_new_children(vec![
                    Arc::clone(join.left()),
                    one_partition(join.right()),
                ])?
                .build()?;
            once.swap_inputs(PartitionMode::CollectLeft)?
        } else if !left_stream && right_stream {
            let one = join.left().output_partitioning().partition_count() == 1;
            if join.mode == PartitionMode::CollectLeft && one {
                return Ok(Transformed::no(node));
            }
            Arc::new(
                join.builder()
                    .with_new_children(vec![one_partition(join.left()), Arc::clone(join.right())])?
                    .with_partition_mode(PartitionMode::CollectLeft)
                    .build()?,
            )
        } else {
            return Ok(Transformed::no(node));
        };
        Ok(Transformed::yes(turned))
    });
    let oriented = oriented
        .map_err(|e| SqlError::Internal(format!("turning a lookup join: {e}")))?
        .data;
    if let Some(refused) = refused {
        return Err(refused);
    }
    Ok(oriented)
}

/// `plan`, its partitions merged into one when it has several (a hash join's collected
/// build side must be one partition).
fn one_partition(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(Arc::clone(plan)))
    } else {
        Arc::clone(plan)
    }
}

/// Checks a lookup join (see [`lookup_build_side`]) keeps no unmatched table rows.
///
/// # Errors
/// The join types that would: [`SqlError::Unsupported`] with the rewrite.
pub fn check_lookup_join(join: &HashJoinExec, at: StatementRef) -> Result<()> {
    let (what, tables) = bounded_name(join.left());
    match join.join_type {
        JoinType::Inner
        | JoinType::Right
        | JoinType::RightSemi
        | JoinType::RightAnti
        | JoinType::RightMark => Ok(()),
        JoinType::Left | JoinType::Full => Err(SqlError::Unsupported {
            at,
            message: format!(
                "a {} join that keeps the unmatched rows of {what} is not streamed: whether a table row ever matches depends on every stream row still to come. Keep the stream's rows instead (stream LEFT JOIN {tables}), or run `volley batch`",
                if join.join_type == JoinType::Full {
                    "FULL"
                } else {
                    "RIGHT"
                }
            ),
        }),
        _ => Err(SqlError::Unsupported {
            at,
            message: format!(
                "a semi- or anti-join (IN / EXISTS, or NOT …, over the stream) returning the rows of {what} is not streamed: which table rows match depends on every stream row still to come. Filter the stream by the table instead (WHERE key IN (SELECT key FROM {tables})), or run `volley batch`"
            ),
        }),
    }
}

/// `plan` with a fresh hash table for every lookup join over `table`: run next, they hash the
/// table's current rows. Other joins keep theirs.
///
/// # Errors
/// DataFusion failures rebuilding a join.
pub fn reset_lookup_joins(
    plan: &Arc<dyn ExecutionPlan>,
    table: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(plan)
        .transform_up(|node| {
            let Some(build) = lookup_build_side(node.as_ref()) else {
                return Ok(Transformed::no(node));
            };
            if !lookup_tables_read(build).iter().any(|t| t == table) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(node.reset_state()?))
        })
        .map(|t| t.data)
        .map_err(|e| SqlError::Internal(format!("refreshing lookup table '{table}': {e}")))
}

//! The long-lived leaf of every streaming plan: a node that yields "this epoch's batches".
//!
//! Physical plans are built once per pipeline. Each epoch the engine puts the new rows into an
//! [`EpochSlot`] and executes the plan again; [`EpochSourceExec`] streams whatever the slot holds
//! at `execute` time, so no plan is rebuilt per epoch.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

/// The batches of the current epoch for one input, shared by every plan that reads it.
#[derive(Debug, Default)]
pub struct EpochSlot {
    batches: Mutex<Vec<RecordBatch>>,
}

impl EpochSlot {
    /// An empty slot.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the slot's contents with this epoch's batches.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        *self.lock() = batches;
    }

    /// Empties the slot.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// A cheap copy (Arc clones) of the current batches.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordBatch>> {
        // A poisoned lock only means another thread panicked mid-`set`; the Vec is still valid.
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A table whose scan is an [`EpochSourceExec`] over `slot`: how a streaming source (or an
/// operator's output) appears to DataFusion's planner.
#[derive(Debug)]
pub struct EpochTable {
    name: String,
    schema: SchemaRef,
    slot: Arc<EpochSlot>,
}

impl EpochTable {
    /// A table named `name` (for plan display) reading `slot`.
    pub fn new(name: impl Into<String>, schema: SchemaRef, slot: Arc<EpochSlot>) -> Self {
        Self {
            name: name.into(),
            schema,
            slot,
        }
    }
}

#[async_trait]
impl TableProvider for EpochTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(EpochSourceExec::new(
            self.name.clone(),
            Arc::clone(&self.schema),
            projection.cloned(),
            Arc::clone(&self.slot),
        )?))
    }
}

/// Streams the batches in an [`EpochSlot`] (projected), each time it is executed.
#[derive(Debug)]
pub struct EpochSourceExec {
    name: String,
    projection: Option<Vec<usize>>,
    slot: Arc<EpochSlot>,
    properties: Arc<PlanProperties>,
}

impl EpochSourceExec {
    /// A leaf over `slot`; `projection` picks columns of `schema`.
    ///
    /// # Errors
    /// A projection index outside `schema`.
    pub fn new(
        name: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        slot: Arc<EpochSlot>,
    ) -> Result<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            name,
            projection,
            slot,
            properties: Arc::new(properties),
        })
    }

    /// The input name this leaf reads (a source table, or an operator's output).
    pub fn input_name(&self) -> &str {
        &self.name
    }

    /// The column of the unprojected input that output column `index` is.
    pub fn input_column(&self, index: usize) -> usize {
        self.projection.as_ref().map_or(index, |p| p[index])
    }
}

impl DisplayAs for EpochSourceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "EpochSourceExec: input={}", self.name)?;
        if let Some(p) = &self.projection {
            write!(f, ", projection={p:?}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for EpochSourceExec {
    fn name(&self) -> &str {
        "EpochSourceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "EpochSourceExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "EpochSourceExec has one partition, asked for {partition}"
            )));
        }
        let stream = MemoryStream::try_new(
            self.slot.snapshot(),
            Arc::clone(self.properties.eq_properties.schema()),
            self.projection.clone(),
        )?;
        Ok(Box::pin(stream))
    }
}

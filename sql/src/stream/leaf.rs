//! The long-lived leaf of every streaming plan: a node that yields "this epoch's batches".
//!
//! Physical plans are built once per pipeline. Each epoch the engine puts the new rows into an
//! [`EpochSlot`] and executes the plan again; [`EpochSourceExec`] streams whatever the slot holds
//! at `execute` time, so no plan is rebuilt per epoch.
//!
//! A leaf may split the epoch into several partitions: contiguous, near-equal runs of rows, so
//! the stateless segment and the partial aggregate above it run on several cores, and the
//! partitions concatenated in order are the input in its own order.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::late::LateFilter;
use arrow::array::{ArrayRef, UInt64Array};
use arrow::compute::filter;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
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

/// The batches of the current epoch for one input, shared by every plan that reads it, each
/// with the source partition it came from (when the source has partitions).
#[derive(Debug, Default)]
pub struct EpochSlot {
    batches: Mutex<Vec<RecordBatch>>,
    partitions: Mutex<Vec<Option<String>>>,
}

impl EpochSlot {
    /// An empty slot.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the slot's contents with this epoch's batches.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        self.set_from_partitions(batches, Vec::new());
    }

    /// Replaces the slot's contents with this epoch's batches and, beside them, the source
    /// partition each came from.
    pub fn set_from_partitions(&self, batches: Vec<RecordBatch>, partitions: Vec<Option<String>>) {
        *self.lock() = batches;
        *self.partitions.lock().unwrap_or_else(|e| e.into_inner()) = partitions;
    }

    /// Empties the slot.
    pub fn clear(&self) {
        self.set_from_partitions(Vec::new(), Vec::new());
    }

    /// The partition of each batch (empty, or shorter, when unknown).
    fn partitions(&self) -> Vec<Option<String>> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rows in the slot now.
    pub fn rows(&self) -> usize {
        self.lock().iter().map(RecordBatch::num_rows).sum()
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
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    slot: Arc<EpochSlot>,
    partitions: usize,
    properties: Arc<PlanProperties>,
    /// Windowed aggregates: late rows leave here, whole, before the projection.
    late: Option<LateFilter>,
    /// Appends [`POSITION`] (each row's index in the epoch's input) after the projected
    /// columns, so a row can be traced back to its source record.
    positions: bool,
}

/// The column a leaf with positions appends: each row's index in its epoch's input from the
/// source (with the epoch, a position that reads the record again).
pub const POSITION: &str = "_epoch_row";

impl EpochSourceExec {
    /// A one-partition leaf over `slot`; `projection` picks columns of `schema`.
    ///
    /// # Errors
    /// A projection index outside `schema`.
    pub fn new(
        name: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        slot: Arc<EpochSlot>,
    ) -> Result<Self> {
        Self::partitioned(name, schema, projection, slot, 1)
    }

    /// A leaf whose epoch is split into `partitions` contiguous runs of rows.
    ///
    /// # Errors
    /// A projection index outside `schema`.
    pub fn partitioned(
        name: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        slot: Arc<EpochSlot>,
        partitions: usize,
    ) -> Result<Self> {
        Self::build(name, schema, projection, slot, partitions, false)
    }

    fn build(
        name: String,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        slot: Arc<EpochSlot>,
        partitions: usize,
        positions: bool,
    ) -> Result<Self> {
        let partitions = partitions.max(1);
        let projected = match &projection {
            Some(p) => schema.project(p)?,
            None => schema.as_ref().clone(),
        };
        let projected = if positions {
            let mut fields: Vec<_> = projected.fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(POSITION, DataType::UInt64, false)));
            Schema::new_with_metadata(fields, projected.metadata().clone())
        } else {
            projected
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::new(projected)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            name,
            schema,
            projection,
            slot,
            partitions,
            properties: Arc::new(properties),
            late: None,
            positions,
        })
    }

    /// The same leaf, with [`POSITION`] appended to its output.
    ///
    /// # Errors
    /// Never in practice: the projection was checked when `self` was built.
    pub fn with_positions(&self) -> Result<Self> {
        self.rebuilt(self.partitions, true)
    }

    /// The same leaf (its late rows' filter too) with another partition count or output.
    fn rebuilt(&self, partitions: usize, positions: bool) -> Result<Self> {
        Ok(Self {
            late: self.late.clone(),
            ..Self::build(
                self.name.clone(),
                Arc::clone(&self.schema),
                self.projection.clone(),
                Arc::clone(&self.slot),
                partitions,
                positions,
            )?
        })
    }

    /// Whether the leaf appends [`POSITION`].
    pub fn has_positions(&self) -> bool {
        self.positions
    }

    /// The same leaf, sending rows `late` finds late to its gate.
    pub fn with_late(&self, late: LateFilter) -> Self {
        Self {
            late: Some(late),
            ..self.duplicate()
        }
    }

    /// The schema of the input this leaf reads (before its projection).
    pub fn input_schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn duplicate(&self) -> Self {
        Self {
            name: self.name.clone(),
            schema: Arc::clone(&self.schema),
            projection: self.projection.clone(),
            slot: Arc::clone(&self.slot),
            partitions: self.partitions,
            properties: Arc::clone(&self.properties),
            late: self.late.clone(),
            positions: self.positions,
        }
    }

    /// The same leaf, split into `partitions` partitions.
    ///
    /// # Errors
    /// Never in practice: the projection was checked when `self` was built.
    pub fn with_partitions(&self, partitions: usize) -> Result<Self> {
        self.rebuilt(partitions, self.positions)
    }

    /// How many partitions each epoch is split into.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The input name this leaf reads (a source table, or an operator's output).
    pub fn input_name(&self) -> &str {
        &self.name
    }

    /// The column of the unprojected input that output column `index` is (`None` for
    /// [`POSITION`], which no input column is).
    pub fn input_column(&self, index: usize) -> Option<usize> {
        match &self.projection {
            Some(p) => p.get(index).copied(),
            None => (index < self.schema.fields().len()).then_some(index),
        }
    }
}

impl DisplayAs for EpochSourceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "EpochSourceExec: input={}", self.name)?;
        if self.partitions > 1 {
            write!(f, ", partitions={}", self.partitions)?;
        }
        if let Some(p) = &self.projection {
            write!(f, ", projection={p:?}")?;
        }
        if self.positions {
            write!(f, ", with {POSITION}")?;
        }
        if let Some(late) = &self.late {
            write!(
                f,
                ", late rows: window_start={} <= emitted",
                late.window_start
            )?;
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
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!(
                "EpochSourceExec has {} partition(s), asked for {partition}",
                self.partitions
            )));
        }
        let tags = self.slot.partitions();
        let mut batches = Vec::new();
        let schema = Arc::clone(self.properties.eq_properties.schema());
        for (batch, first_row, index) in chunk(&self.slot.snapshot(), partition, self.partitions) {
            let rows = batch.num_rows() as u64;
            let (batch, kept) = match &self.late {
                Some(late) => {
                    let tag = tags.get(index).and_then(Option::as_deref);
                    late.split(&self.name, tag, batch, first_row)?
                }
                None => (batch, None),
            };
            let batch = match &self.projection {
                Some(p) => batch.project(p)?,
                None => batch,
            };
            if !self.positions {
                batches.push(batch);
                continue;
            }
            let at: ArrayRef = Arc::new(UInt64Array::from_iter_values(first_row..first_row + rows));
            let at = match kept {
                Some(kept) => filter(&at, &kept)?,
                None => at,
            };
            let mut columns = batch.columns().to_vec();
            columns.push(at);
            batches.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
        }
        let stream = MemoryStream::try_new(batches, schema, None)?;
        Ok(Box::pin(stream))
    }
}

/// Rows `[part × total / parts, (part + 1) × total / parts)` of `batches`, as zero-copy slices,
/// each with the index (in all of `batches`) of its first row and the batch it is cut from.
fn chunk(batches: &[RecordBatch], part: usize, parts: usize) -> Vec<(RecordBatch, u64, usize)> {
    if parts == 1 {
        let mut first = 0;
        return batches
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let at = first;
                first += b.num_rows() as u64;
                (b.clone(), at, i)
            })
            .collect();
    }
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let (start, end) = (total * part / parts, total * (part + 1) / parts);
    let mut out = Vec::new();
    let mut offset = 0;
    for (index, batch) in batches.iter().enumerate() {
        let rows = batch.num_rows();
        let (lo, hi) = (start.max(offset), end.min(offset + rows));
        if lo < hi {
            out.push((batch.slice(lo - offset, hi - lo), lo as u64, index));
        }
        offset += rows;
        if offset >= end {
            break;
        }
    }
    out
}

/// The inputs `plan` reads (its leaves' names), each once, in plan order.
pub fn leaves(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    fn collect(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
        if let Some(leaf) = plan.downcast_ref::<EpochSourceExec>()
            && !out.iter().any(|s| s == leaf.input_name())
        {
            out.push(leaf.input_name().to_string());
        }
        for child in plan.children() {
            collect(child, out);
        }
    }
    let mut read = Vec::new();
    collect(plan, &mut read);
    read
}

/// The columns (of each input's full schema) the leaves of `plan` read, by input.
pub fn columns_read(
    plan: &Arc<dyn ExecutionPlan>,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<usize>> {
    let mut read: std::collections::BTreeMap<String, std::collections::BTreeSet<usize>> =
        std::collections::BTreeMap::new();
    let _ = datafusion::common::tree_node::TreeNode::apply(plan, |node| {
        if let Some(leaf) = node.downcast_ref::<EpochSourceExec>() {
            let columns = read.entry(leaf.input_name().to_string()).or_default();
            columns.extend((0..leaf.schema().fields().len()).filter_map(|i| leaf.input_column(i)));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    read
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>();
                a.map(|a| a.values().to_vec()).unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn chunks_are_contiguous_near_equal_and_cover_every_row_once() {
        let input = vec![batch(0..7), batch(7..8), batch(8..20), batch(20..23)];
        for parts in 1..=30 {
            let mut all = Vec::new();
            let mut sizes = Vec::new();
            for part in 0..parts {
                let slices = chunk(&input, part, parts);
                for (slice, first, _) in &slices {
                    assert_eq!(values(std::slice::from_ref(slice))[0], *first as i64);
                }
                let slices: Vec<RecordBatch> = slices.into_iter().map(|(b, _, _)| b).collect();
                let got = values(&slices);
                sizes.push(got.len());
                all.extend(got);
            }
            assert_eq!(all, (0..23).collect::<Vec<_>>(), "{parts} parts");
            let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{sizes:?}");
        }
        assert!(chunk(&[], 0, 4).is_empty());
    }
}

//! An OVER node's state in a checkpoint, as Arrow rows:
//!
//! - `pending`: input rows not final yet;
//! - `partitions`: one row per partition: its key (PARTITION BY values in Arrow's row format),
//!   rows emitted and dropped, ranking carry, greatest event time, each function's last frame
//!   and each running (UNBOUNDED PRECEDING) aggregate's state, as the aggregate's own state
//!   fields;
//! - `rows` and `head`: each partition's held rows and first rows as the functions read them
//!   (the event time and the functions' arguments), with the partition's row number in
//!   `partitions`; `full`: the held rows whole, where rows wait for LEAD.
//!
//! A sliding aggregate's accumulator is not written: it is rebuilt on restore from the held
//! rows of its last frame, which are exactly the rows it holds.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch,
    UInt32Array, UInt64Array,
};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use volley_sql::stream::operator::{OperatorError, RestoredState, Result, StatePiece};

mod carry;
mod gather;

use carry::{Carries, Carry};
use gather::Gather;

use super::function::Kind;
use super::partition::{FnState, Partition};
use super::{Key, OverState, WHAT};

/// The column naming a held row's partition.
const PARTITION: &str = "__volley_partition";

/// Partitions per checkpoint thread, at least (in tests, few: small states take many).
#[cfg(not(test))]
const PER_THREAD: usize = 1 << 16;
#[cfg(test)]
const PER_THREAD: usize = 4;

/// The schemas of the pieces gathered from partitions.
struct Schemas {
    partitions: SchemaRef,
    held: SchemaRef,
    full: SchemaRef,
}

/// One chunk of partitions' `partitions`, `rows`, `head` and `full` rows.
type Chunk = [RecordBatch; 4];

impl OverState {
    /// The schema of the `partitions` piece.
    fn partitions_schema(&self) -> Result<SchemaRef> {
        let Carries {
            emitted,
            pruned,
            ranks,
        } = self.carries();
        let mut fields = vec![Field::new("key", DataType::Binary, false)];
        if emitted {
            fields.push(Field::new("emitted", DataType::UInt64, false));
        }
        if pruned {
            fields.push(Field::new("pruned", DataType::UInt64, false));
        }
        if ranks {
            fields.push(Field::new("ranked", DataType::Boolean, false));
            fields.push(Field::new("last_ts", DataType::Int64, true));
            fields.push(Field::new("rank", DataType::UInt64, false));
            fields.push(Field::new("dense", DataType::UInt64, false));
        }
        fields.push(Field::new("max_ts", DataType::Int64, true));
        for (i, f) in self.plan.functions.iter().enumerate() {
            if f.uses_frame() {
                fields.push(Field::new(format!("f{i}_start"), DataType::UInt32, false));
                fields.push(Field::new(format!("f{i}_end"), DataType::UInt32, false));
            }
            if let Kind::Aggregate { agg, sliding: false } = &f.kind {
                for s in agg.state_fields().map_err(OperatorError::exec(WHAT))? {
                    fields.push(Field::new(
                        format!("f{i}_{}", s.name()),
                        s.data_type().clone(),
                        true,
                    ));
                }
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Which counters a partition's checkpoint row needs: rows emitted (only while rows wait
    /// for LEAD), rows dropped (row numbers, ranks, NTH_VALUE from the first row), the ranks.
    fn carries(&self) -> Carries {
        let functions = &self.plan.functions;
        let ranks = functions
            .iter()
            .any(|f| matches!(f.kind, Kind::Rank | Kind::DenseRank));
        let pruned = ranks
            || functions.iter().any(|f| {
                matches!(f.kind, Kind::RowNumber)
                    || (matches!(f.kind, Kind::Nth { .. })
                        && f.start == super::function::Start::Unbounded)
            });
        Carries {
            emitted: self.plan.lookahead() > 0,
            pruned,
            ranks,
        }
    }

    /// `schema` with the partition column.
    fn held_schema(schema: &SchemaRef) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(PARTITION, DataType::UInt64, false)));
        Arc::new(Schema::new(fields))
    }

    /// The checkpoint's pieces. Running accumulators give their state (which takes it) and are
    /// replaced by accumulators merged from it. Many partitions are gathered in chunks, one
    /// thread each.
    pub(super) fn pieces(&self) -> Result<Vec<StatePiece>> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| OperatorError::Internal("OVER state poisoned".into()))?;
        let inner = &mut *inner;
        let input = self.plan.input.plan.schema();
        let schemas = Schemas {
            partitions: self.partitions_schema()?,
            held: Self::held_schema(&self.plan.values),
            full: Self::held_schema(&input),
        };
        // Partition numbers follow the map's order, which stays as it is meanwhile.
        let mut partitions: Vec<(&Key, &mut Partition)> = inner.partitions.iter_mut().collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(partitions.len() / PER_THREAD)
            .max(1);
        let size = partitions.len().div_ceil(threads).max(1);
        let chunks: Vec<Chunk> = if threads == 1 {
            vec![self.chunk(&schemas, 0, &mut partitions)?]
        } else {
            std::thread::scope(|scope| {
                let running: Vec<_> = partitions
                    .chunks_mut(size)
                    .enumerate()
                    .map(|(i, chunk)| {
                        let schemas = &schemas;
                        scope.spawn(move || self.chunk(schemas, i * size, chunk))
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|thread| {
                        thread.join().unwrap_or_else(|_| {
                            Err(OperatorError::Internal(
                                "an OVER checkpoint thread panicked".into(),
                            ))
                        })
                    })
                    .collect::<Result<_>>()
            })?
        };
        let piece = |name: &str, schema: &SchemaRef, rows: Vec<RecordBatch>| StatePiece {
            name: name.into(),
            schema: Arc::clone(schema),
            rows,
        };
        let mut by_piece: [Vec<RecordBatch>; 4] = Default::default();
        for chunk in chunks {
            for (all, batch) in by_piece.iter_mut().zip(chunk) {
                all.push(batch);
            }
        }
        let [carried, rows, heads, full] = by_piece;
        Ok(vec![
            piece("pending", &input, inner.pending.clone()),
            piece("partitions", &schemas.partitions, carried),
            piece("rows", &schemas.held, rows),
            piece("head", &schemas.held, heads),
            piece("full", &schemas.full, full),
        ])
    }

    /// The `partitions`, `rows`, `head` and `full` rows of `partitions`, numbered from `first`.
    fn chunk(
        &self,
        schemas: &Schemas,
        first: usize,
        partitions: &mut [(&Key, &mut Partition)],
    ) -> Result<Chunk> {
        let functions = &self.plan.functions;
        let width = self.plan.values.fields().len();
        let mut carry = Carry::new(self.carries(), functions, partitions.len())?;
        let (mut rows, mut heads) = (Gather::new(width), Gather::new(width));
        let mut full = Gather::new(self.plan.input.plan.schema().fields().len());
        for (i, (key, p)) in partitions.iter_mut().enumerate() {
            carry.push(functions, key, p)?;
            let p = &**p;
            let ordinal = (first + i) as u64;
            rows.push(&p.rows, ordinal);
            if let Some(head) = &p.head {
                heads.push(head, ordinal);
            }
            if let Some(whole) = &p.full {
                full.push(whole, ordinal);
            }
        }
        Ok([
            carry.finish(functions, &schemas.partitions)?,
            rows.finish(&schemas.held)?,
            heads.finish(&schemas.held)?,
            full.finish(&schemas.full)?,
        ])
    }

    /// Refuses piece `name` when its columns are not the `expected` ones: state written for
    /// other functions, or by a build that kept it otherwise.
    fn fits(&self, name: &str, expected: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
        let columns = |schema: &Schema| {
            schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
        };
        let want = columns(expected);
        match batches.iter().map(|b| columns(&b.schema())).find(|got| *got != want) {
            None => Ok(()),
            Some(got) => Err(OperatorError::Checkpoint(format!(
                "the checkpoint's '{name}' state of {} has columns [{}], but this build keeps [{}] for the same SQL: the checkpoint was written by another version; run with --from-scratch",
                self.plan.output_name,
                got.join(", "),
                want.join(", ")
            ))),
        }
    }

    /// Loads a checkpoint's pieces into the empty state.
    pub(super) fn load(&mut self, state: &mut RestoredState) -> Result<()> {
        let missing = |name: &str| {
            OperatorError::Checkpoint(format!(
                "the checkpoint of {} has no '{name}' piece",
                self.plan.output_name
            ))
        };
        let pending = state.take("pending").ok_or_else(|| missing("pending"))?;
        let partitions = state.take("partitions").ok_or_else(|| missing("partitions"))?;
        let rows = state.take("rows").ok_or_else(|| missing("rows"))?;
        let heads = state.take("head").ok_or_else(|| missing("head"))?;
        let full = state.take("full").unwrap_or_default();
        let input = self.plan.input.plan.schema();
        let values = Arc::clone(&self.plan.values);
        let schema = self.partitions_schema()?;
        let (held, held_full) = (Self::held_schema(&values), Self::held_schema(&input));
        for (name, expected, batches) in [
            ("partitions", &schema, &partitions),
            ("rows", &held, &rows),
            ("head", &held, &heads),
            ("full", &held_full, &full),
        ] {
            self.fits(name, expected, batches)?;
        }
        let rows = by_partition(&Self::held_schema(&values), &values, rows)?;
        let heads = by_partition(&Self::held_schema(&values), &values, heads)?;
        let full = by_partition(&Self::held_schema(&input), &input, full)?;
        let lead = self.plan.lookahead() > 0;
        let partitions = concat_batches(&schema, partitions.iter())?;
        let plan = self.plan.clone();
        let Carries {
            emitted: with_emitted,
            pruned: with_pruned,
            ranks: with_ranks,
        } = self.carries();
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.pending = pending.into_iter().filter(|b| b.num_rows() > 0).collect();
        let u64s = |name: &str| typed::<UInt64Array>(&partitions, name);
        let i64s = |name: &str| typed::<Int64Array>(&partitions, name);
        let u32s = |name: &str| typed::<UInt32Array>(&partitions, name);
        let keys = typed::<BinaryArray>(&partitions, "key")?;
        let optional = |present: bool, name: &str| present.then(|| u64s(name)).transpose();
        let emitted = optional(with_emitted, "emitted")?;
        let pruned = optional(with_pruned, "pruned")?;
        let rank = optional(with_ranks, "rank")?;
        let dense = optional(with_ranks, "dense")?;
        let ranked = with_ranks
            .then(|| typed::<BooleanArray>(&partitions, "ranked"))
            .transpose()?;
        let last_ts = with_ranks.then(|| i64s("last_ts")).transpose()?;
        let max_ts = i64s("max_ts")?;
        let frames = plan
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.uses_frame()
                    .then(|| Ok((u32s(&format!("f{i}_start"))?, u32s(&format!("f{i}_end"))?)))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let value = |a: &Int64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
        for p in 0..partitions.num_rows() {
            let held = rows
                .get(&(p as u64))
                .cloned()
                .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&values)));
            let whole = lead.then(|| {
                full.get(&(p as u64))
                    .cloned()
                    .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&input)))
            });
            let mut partition = Partition::new((held, whole), &plan.functions, 0, None)
                .map_err(OperatorError::exec(WHAT))?;
            partition.head = heads.get(&(p as u64)).cloned();
            // Without LEAD every held row was emitted.
            partition.emitted = emitted.as_ref().map_or(partition.rows.num_rows(), |e| {
                usize::try_from(e.value(p)).unwrap_or(usize::MAX)
            });
            partition.pruned = pruned.as_ref().map_or(0, |a| a.value(p));
            partition.rank = rank.as_ref().map_or(0, |a| a.value(p));
            partition.dense = dense.as_ref().map_or(0, |a| a.value(p));
            if let (Some(ranked), Some(last_ts)) = (&ranked, &last_ts) {
                partition.last_ts = ranked.value(p).then(|| value(last_ts, p));
            }
            partition.max_ts = value(&max_ts, p);
            for (i, f) in plan.functions.iter().enumerate() {
                let (start, end) = frames[i]
                    .as_ref()
                    .map_or((0, 0), |(s, e)| (s.value(p) as usize, e.value(p) as usize));
                let fn_state = &mut partition.states[i];
                fn_state.last = Range { start, end };
                restore_accumulator(f, fn_state, &partition.rows, &partitions, i, p)?;
            }
            if partition.emitted > partition.rows.num_rows() {
                return Err(OperatorError::Checkpoint(format!(
                    "the OVER checkpoint's partition {p} emitted more rows than it holds"
                )));
            }
            let key: Key = keys.value(p).into();
            if partition.waiting() > 0 {
                inner.waiting.insert(key.clone());
            }
            inner.partitions.insert(key, partition);
        }
        Ok(())
    }
}

/// An aggregate's accumulator as it was: a running one merged from its state; a sliding one
/// updated with the rows of its last frame.
fn restore_accumulator(
    function: &super::function::Function,
    state: &mut FnState,
    rows: &RecordBatch,
    partitions: &RecordBatch,
    i: usize,
    p: usize,
) -> Result<()> {
    let Kind::Aggregate { agg, sliding } = &function.kind else {
        return Ok(());
    };
    let Some(acc) = state.acc.as_mut() else {
        return Ok(());
    };
    if *sliding {
        let range = state.last.clone();
        if range.end > rows.num_rows() || range.start > range.end {
            return Err(OperatorError::Checkpoint(format!(
                "the OVER checkpoint's frame {range:?} is outside the partition's {} rows",
                rows.num_rows()
            )));
        }
        if range.end > range.start {
            let values = function.arg_values(rows).map_err(OperatorError::exec(WHAT))?;
            let slice: Vec<ArrayRef> = values
                .iter()
                .map(|v| v.slice(range.start, range.end - range.start))
                .collect();
            acc.update_batch(&slice).map_err(OperatorError::exec(WHAT))?;
        }
        return Ok(());
    }
    let fields = agg.state_fields().map_err(OperatorError::exec(WHAT))?;
    let arrays = fields
        .iter()
        .map(|f| {
            partitions
                .column_by_name(&format!("f{i}_{}", f.name()))
                .map(|c| c.slice(p, 1))
                .ok_or_else(|| {
                    OperatorError::Checkpoint(format!(
                        "no state '{}' of {} in the OVER checkpoint",
                        f.name(),
                        function.text
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    acc.merge_batch(&arrays).map_err(OperatorError::exec(WHAT))
}

/// Held rows by partition row number, without the partition column.
fn by_partition(
    held: &SchemaRef,
    input: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<std::collections::HashMap<u64, RecordBatch>> {
    let all = concat_batches(held, batches.iter())?;
    let mut out = std::collections::HashMap::new();
    let Some(column) = all.column_by_name(PARTITION) else {
        return Ok(out);
    };
    let ids = column
        .as_any()
        .downcast_ref::<UInt64Array>()
        .cloned()
        .ok_or_else(|| OperatorError::Checkpoint(format!("'{PARTITION}' is not UInt64")))?;
    let data = all.project(&(0..input.fields().len()).collect::<Vec<_>>())?;
    // Rows are written partition by partition: each partition's rows are one run.
    let mut i = 0;
    while i < ids.len() {
        let id = ids.value(i);
        let mut j = i + 1;
        while j < ids.len() && ids.value(j) == id {
            j += 1;
        }
        let rows = data.slice(i, j - i);
        if out.insert(id, rows).is_some() {
            let mask = eq(&ids, &UInt64Array::new_scalar(id))?;
            let rows = filter_record_batch(&data, &mask)?;
            out.insert(id, rows);
        }
        i = j;
    }
    Ok(out)
}

/// Column `name` of a checkpoint's `partitions` rows, as an `A`.
fn typed<A: Array + Clone + 'static>(partitions: &RecordBatch, name: &str) -> Result<A> {
    partitions
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<A>().cloned())
        .ok_or_else(|| {
            OperatorError::Checkpoint(format!(
                "the OVER checkpoint has no column '{name}' of the expected type"
            ))
        })
}

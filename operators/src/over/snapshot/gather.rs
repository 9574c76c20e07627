//! Many partitions' small batches gathered into one, column by column: primitive columns by
//! copying their values (no per-array type checks or `MutableArrayData`), others by `concat`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanBufferBuilder, PrimitiveArray, RecordBatch,
    UInt64Array, downcast_primitive_array, new_empty_array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::concat;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

/// The rows of many partitions, each tagged with its partition's number.
pub(super) struct Gather<'a> {
    columns: Vec<Vec<&'a dyn Array>>,
    ids: Vec<u64>,
}

impl<'a> Gather<'a> {
    /// Nothing gathered yet, for batches of `width` columns.
    pub fn new(width: usize) -> Self {
        Self {
            columns: (0..width).map(|_| Vec::new()).collect(),
            ids: Vec::new(),
        }
    }

    /// Adds partition `id`'s `rows`.
    pub fn push(&mut self, rows: &'a RecordBatch, id: u64) {
        if rows.num_rows() == 0 {
            return;
        }
        for (parts, column) in self.columns.iter_mut().zip(rows.columns()) {
            parts.push(column.as_ref());
        }
        self.ids.extend(std::iter::repeat_n(id, rows.num_rows()));
    }

    /// One batch of `held` (the rows' columns, then the partition number).
    pub fn finish(self, held: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        let mut columns = self
            .columns
            .iter()
            .zip(held.fields())
            .map(|(parts, field)| match parts.first() {
                None => Ok(new_empty_array(field.data_type())),
                Some(first) => gather(*first, parts),
            })
            .collect::<Result<Vec<_>, _>>()?;
        columns.push(Arc::new(UInt64Array::from(self.ids)));
        RecordBatch::try_new(Arc::clone(held), columns)
    }
}

/// `parts` (of `first`'s type) as one array.
fn gather(first: &dyn Array, parts: &[&dyn Array]) -> Result<ArrayRef, ArrowError> {
    downcast_primitive_array!(
        first => primitive(first, parts),
        _ => concat(parts),
    )
}

/// `parts`, each a `PrimitiveArray<T>`, as one: values copied, validity kept.
fn primitive<T: ArrowPrimitiveType>(
    first: &PrimitiveArray<T>,
    parts: &[&dyn Array],
) -> Result<ArrayRef, ArrowError> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut values: Vec<T::Native> = Vec::with_capacity(len);
    let mut nulls: Option<BooleanBufferBuilder> = None;
    for part in parts {
        let part = part
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!(
                    "cannot gather a {} among {} arrays",
                    part.data_type(),
                    first.data_type()
                ))
            })?;
        match (part.nulls(), &mut nulls) {
            (Some(valid), Some(builder)) => builder.append_buffer(valid.inner()),
            (Some(valid), None) => {
                let mut builder = BooleanBufferBuilder::new(len);
                builder.append_n(values.len(), true);
                builder.append_buffer(valid.inner());
                nulls = Some(builder);
            }
            (None, Some(builder)) => builder.append_n(part.len(), true),
            (None, None) => {}
        }
        values.extend_from_slice(part.values());
    }
    let nulls = nulls.map(|mut b| NullBuffer::new(b.finish()));
    Ok(Arc::new(
        PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(first.data_type().clone()),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn gathers_values_nulls_and_types_of_many_parts() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |ts: Vec<Option<i64>>, x: Vec<Option<f64>>, s: Vec<Option<&str>>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(TimestampNanosecondArray::from(ts).with_timezone("UTC")),
                    Arc::new(Float64Array::from(x)),
                    Arc::new(StringArray::from(s)),
                ],
            )
            .unwrap()
        };
        let a = batch(vec![Some(1), Some(2)], vec![Some(0.5), Some(f64::NAN)], vec![Some("a"), None]);
        let empty = batch(vec![], vec![], vec![]);
        let b = batch(vec![None], vec![None], vec![Some("c")]);
        let c = batch(vec![Some(4), Some(5), Some(6)], vec![Some(-0.0), Some(1.0), None], vec![None, Some("e"), Some("f")]);
        let sliced = c.slice(1, 2);
        let mut held: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        held.push(Arc::new(Field::new("p", DataType::UInt64, false)));
        let held = Arc::new(Schema::new(held));
        let mut gather = Gather::new(3);
        gather.push(&a, 7);
        gather.push(&empty, 8);
        gather.push(&b, 9);
        gather.push(&sliced, 10);
        let out = gather.finish(&held).unwrap();
        let expected = arrow::compute::concat_batches(&schema, [&a, &b, &sliced]).unwrap();
        assert_eq!(out.schema(), held);
        for i in 0..3 {
            assert_eq!(out.column(i).to_data(), expected.column(i).to_data(), "column {i}");
        }
        let ids = out.column(3).as_any().downcast_ref::<UInt64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![7, 7, 9, 10, 10]);
        assert_eq!(Gather::new(3).finish(&held).unwrap().num_rows(), 0);
    }
}

//! Arrow columns to a row-major f32 tensor and model outputs back to Arrow arrays.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Fields, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use super::TensorInfo;

/// Values per row of an output of `shape` (`[rows]` or `[rows, width]`).
pub(super) fn width(shape: &[i64]) -> usize {
    shape
        .get(1)
        .and_then(|w| usize::try_from(*w).ok())
        .unwrap_or(1)
}

/// The Arrow type of an output of `shape`: `Float32` for one value per row,
/// `FixedSizeList<Float32>` otherwise.
pub fn output_type(shape: &[i64]) -> DataType {
    match width(shape) {
        1 => DataType::Float32,
        w => DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            i32::try_from(w).unwrap_or(i32::MAX),
        ),
    }
}

/// Packs `columns` (equal lengths, numeric, no nulls) into one row-major `[rows, k]` buffer:
/// each column is written into its stride straight from its values (ints and floats), or cast
/// to f32 as a whole first (other numeric types, such as decimals).
///
/// # Errors
/// A column that cannot be cast, holds nulls, or has another length.
pub fn pack_rows(columns: &[ArrayRef]) -> Result<Vec<f32>, String> {
    let k = columns.len();
    let rows = columns.first().map_or(0, |c| c.len());
    let mut out = vec![0f32; rows * k];
    for (j, column) in columns.iter().enumerate() {
        if column.len() != rows {
            return Err(format!(
                "value {} has {} rows, value 1 has {rows}",
                j + 1,
                column.len()
            ));
        }
        if column.null_count() > 0 {
            return Err(format!("value {} holds nulls", j + 1));
        }
        let stride = out.iter_mut().skip(j).step_by(k.max(1));
        macro_rules! scatter {
            ($t:ty) => {
                for (slot, v) in stride.zip(column.as_primitive::<$t>().values().iter()) {
                    *slot = *v as f32;
                }
            };
        }
        match column.data_type() {
            DataType::Float64 => scatter!(Float64Type),
            DataType::Float32 => scatter!(Float32Type),
            DataType::Int64 => scatter!(Int64Type),
            DataType::Int32 => scatter!(Int32Type),
            DataType::Int16 => scatter!(Int16Type),
            DataType::Int8 => scatter!(Int8Type),
            DataType::UInt64 => scatter!(UInt64Type),
            DataType::UInt32 => scatter!(UInt32Type),
            DataType::UInt16 => scatter!(UInt16Type),
            DataType::UInt8 => scatter!(UInt8Type),
            _ => {
                let as_f32 = cast(column, &DataType::Float32)
                    .map_err(|e| format!("value {} cannot be a float: {e}", j + 1))?;
                for (slot, v) in stride.zip(as_f32.as_primitive::<Float32Type>().values().iter()) {
                    *slot = *v;
                }
            }
        }
    }
    Ok(out)
}

/// Builds the Arrow result of `rows` rows from each output's row-major values.
pub(super) fn to_arrow(
    outputs: &[TensorInfo],
    values: Vec<Vec<f32>>,
    rows: usize,
    return_type: &DataType,
) -> Result<ArrayRef, String> {
    let arrays: Vec<ArrayRef> = outputs
        .iter()
        .zip(values)
        .map(|(o, v)| one_output(o, v, rows))
        .collect::<Result<_, _>>()?;
    match (return_type, arrays.as_slice()) {
        (DataType::Struct(fields), _) => Ok(Arc::new(
            StructArray::try_new(Fields::clone(fields), arrays, None).map_err(|e| e.to_string())?,
        )),
        (_, [one]) => Ok(Arc::clone(one)),
        _ => Err("a model with several outputs needs a struct result".into()),
    }
}

fn one_output(output: &TensorInfo, values: Vec<f32>, rows: usize) -> Result<ArrayRef, String> {
    let w = width(&output.shape);
    if values.len() != rows * w {
        return Err(format!(
            "output '{}' has {} values for {rows} rows of width {w}",
            output.name,
            values.len()
        ));
    }
    let flat = Float32Array::from(values);
    if w == 1 {
        return Ok(Arc::new(flat));
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(
        item,
        i32::try_from(w).map_err(|e| e.to_string())?,
        Arc::new(flat),
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(list))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int32Array, Int64Array};

    use super::*;

    #[test]
    fn columns_pack_row_major_after_a_cast() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let b: ArrayRef = Arc::new(Float32Array::from(vec![0.5, 1.5, 2.5]));
        let c: ArrayRef = Arc::new(Int32Array::from(vec![7, 8, 9]));
        let d: ArrayRef = Arc::new(
            arrow::array::Decimal128Array::from(vec![125, 250, 375])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        let packed = pack_rows(&[a, b, c, d]).unwrap();
        assert_eq!(
            packed,
            vec![1.0, 0.5, 7.0, 1.25, 2.0, 1.5, 8.0, 2.5, 3.0, 2.5, 9.0, 3.75]
        );
    }

    #[test]
    fn nulls_and_ragged_columns_are_refused() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        assert!(pack_rows(&[Arc::clone(&a)]).unwrap_err().contains("nulls"));
        let c: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(pack_rows(&[c, b]).unwrap_err().contains("rows"));
    }

    #[test]
    fn outputs_become_float32_or_fixed_size_lists() {
        assert_eq!(output_type(&[-1, 1]), DataType::Float32);
        assert_eq!(output_type(&[-1]), DataType::Float32);
        assert!(matches!(
            output_type(&[-1, 3]),
            DataType::FixedSizeList(_, 3)
        ));
    }
}

//! Argument coercion and access shared by the geohash UDFs.
//!
//! Every UDF in this crate coerces its arguments to one canonical Arrow type
//! per parameter (`Float64` for coordinates, `Int64` for precisions, `Utf8` for
//! strings) so the kernels only ever see one concrete array type.

use arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_int64_array;
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::logical_expr::ColumnarValue;

/// Coerces a numeric argument (any int, float or decimal) to `Float64`.
pub(crate) fn coerce_to_f64(func: &str, arg: &str, data_type: &DataType) -> Result<DataType> {
    if data_type.is_numeric() || data_type.is_null() {
        Ok(DataType::Float64)
    } else {
        plan_err!("{func}: argument `{arg}` must be numeric, got {data_type}")
    }
}

/// Coerces an integer argument to `Int64`.
pub(crate) fn coerce_to_i64(func: &str, arg: &str, data_type: &DataType) -> Result<DataType> {
    if data_type.is_integer() || data_type.is_null() {
        Ok(DataType::Int64)
    } else {
        plan_err!("{func}: argument `{arg}` must be an integer, got {data_type}")
    }
}

/// Coerces any string type (`Utf8`, `LargeUtf8`, `Utf8View`) to `Utf8`.
pub(crate) fn coerce_to_utf8(func: &str, arg: &str, data_type: &DataType) -> Result<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        other => plan_err!("{func}: argument `{arg}` must be a string, got {other}"),
    }
}

/// Splits `args` into exactly `N` values, or reports an internal error: the
/// planner has already checked the arity through `coerce_types`.
pub(crate) fn take_args<const N: usize>(
    func: &str,
    args: Vec<ColumnarValue>,
) -> Result<[ColumnarValue; N]> {
    let got = args.len();
    match args.try_into() {
        Ok(args) => Ok(args),
        Err(_) => internal_err!("{func}: expected {N} arguments after planning, got {got}"),
    }
}

/// Returns true when every argument is a scalar, in which case the UDF
/// evaluates one row and answers with a scalar.
pub(crate) fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter()
        .all(|arg| matches!(arg, ColumnarValue::Scalar(_)))
}

/// The `precision` argument of a geohash UDF: usually one literal for the
/// whole batch, sometimes a column.
pub(crate) enum Precision<'a> {
    /// One value for every row; `None` is SQL `NULL`.
    Scalar(Option<i64>),
    /// One value per row.
    Array(&'a Int64Array),
}

impl<'a> Precision<'a> {
    /// Borrows the (already coerced to `Int64`) precision argument.
    pub(crate) fn try_new(func: &str, arg: &'a ColumnarValue) -> Result<Self> {
        match arg {
            ColumnarValue::Scalar(ScalarValue::Int64(value)) => Ok(Self::Scalar(*value)),
            ColumnarValue::Scalar(ScalarValue::Null) => Ok(Self::Scalar(None)),
            ColumnarValue::Scalar(other) => internal_err!(
                "{func}: precision should be Int64 after coercion, got {}",
                other.data_type()
            ),
            ColumnarValue::Array(array) => Ok(Self::Array(as_int64_array(array)?)),
        }
    }

    /// The precision of row `row`, `None` when it is `NULL`.
    #[inline]
    pub(crate) fn get(&self, row: usize) -> Option<i64> {
        match self {
            Self::Scalar(value) => *value,
            Self::Array(array) if array.is_null(row) => None,
            Self::Array(array) => Some(array.value(row)),
        }
    }
}

//! Two float normalisations the aggregate rewrites use, vectorised over whole arrays:
//!
//! - `canonical_float(x)`: -0.0 becomes +0.0 and every NaN the one NaN, so values SQL calls
//!   equal are one value for DISTINCT (DataFusion's GROUP BY folds -0.0 into +0.0 but its
//!   DISTINCT accumulators compare bits, so `count(DISTINCT x)` gave one more than the same
//!   count over `GROUP BY x`).
//! - `infinite_as_nan(x)`: ±inf becomes NaN, for the covariance family, whose online updates
//!   give ±inf or NaN for the same values in different orders; NaN is what the two-pass formula
//!   gives over any input holding an infinity.
//!
//! Both keep NULLs and every other value; non-float arguments pass through unchanged.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{DataType, Float16Type, Float32Type, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::total_order::TotalOrderFloat;

/// Which normalisation a [`FloatKeyFunc`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatKey {
    /// -0.0 → +0.0, any NaN → NaN.
    Canonical,
    /// ±inf → NaN.
    InfiniteAsNan,
}

/// The scalar function behind `canonical_float` and `infinite_as_nan`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FloatKeyFunc {
    key: FloatKey,
    signature: Signature,
}

impl FloatKeyFunc {
    /// The function for `key`.
    pub fn new(key: FloatKey) -> Self {
        Self {
            key,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// `canonical_float(x)` as a UDF.
pub fn canonical_float_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(FloatKeyFunc::new(FloatKey::Canonical))
}

/// `infinite_as_nan(x)` as a UDF.
pub fn infinite_as_nan_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(FloatKeyFunc::new(FloatKey::InfiniteAsNan))
}

fn map<T: TotalOrderFloat>(array: &ArrayRef, key: FloatKey) -> ArrayRef {
    let array = array.as_primitive::<T>();
    let out: PrimitiveArray<T> = match key {
        FloatKey::Canonical => array.unary(|v| T::canonical(v)),
        FloatKey::InfiniteAsNan => array.unary(|v| if T::is_infinite(v) { T::NAN } else { v }),
    };
    Arc::new(out)
}

impl ScalarUDFImpl for FloatKeyFunc {
    fn name(&self) -> &str {
        match self.key {
            FloatKey::Canonical => "canonical_float",
            FloatKey::InfiniteAsNan => "infinite_as_nan",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] => Ok(t.clone()),
            _ => exec_err!("{} takes one argument", self.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name());
        };
        let is_float = matches!(
            arg.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        );
        if !is_float {
            return Ok(arg.clone());
        }
        let scalar = matches!(arg, ColumnarValue::Scalar(_));
        let array = arg.to_array(1)?;
        let out = match array.data_type() {
            DataType::Float16 => map::<Float16Type>(&array, self.key),
            DataType::Float32 => map::<Float32Type>(&array, self.key),
            _ => map::<Float64Type>(&array, self.key),
        };
        if scalar {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

//! `geohash_parent(geohash, precision)`: roll a geohash up to a coarser cell.
//!
//! A geohash's prefixes are the cells that contain it, so the parent at
//! `precision` is simply the first `precision` characters. The kernel slices
//! each input string in place and copies the prefix into one pre-sized
//! `StringBuilder`: no per-row `ScalarValue` and no per-row allocation.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder, new_null_array};
use arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::common::{
    Result, ScalarValue, exec_datafusion_err, internal_err, plan_datafusion_err, plan_err,
};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::args::{Precision, all_scalar, coerce_to_i64, coerce_to_utf8, take_args};

const NAME: &str = "geohash_parent";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "The enclosing geohash cell with `precision` characters, i.e. the first `precision` \
         characters of `geohash`. A geohash already that short or shorter is returned \
         unchanged; NULL in gives NULL out.",
        "geohash_parent(geohash, precision)",
    )
    .with_sql_example("SELECT geohash_parent('u4pruy', 4); -- u4pr")
    .with_argument("geohash", "A geohash string (any string type).")
    .with_argument(
        "precision",
        "Number of characters to keep, an integer of at least 1.",
    )
    .with_related_udf("geohash")
    .build()
});

/// The `geohash_parent(geohash VARCHAR, precision INT) -> VARCHAR` scalar UDF.
///
/// * Any string type is coerced to `VARCHAR` (`Utf8`), any integer
///   `precision` to `BIGINT`; other types are a planning error.
/// * Returns the first `precision` characters of `geohash`; when `geohash`
///   has `precision` characters or fewer it is returned unchanged.
/// * A `NULL` argument gives `NULL`. The input is not validated as a geohash:
///   the function is a character prefix, so it never fails on data.
///
/// # Errors
///
/// A `precision` below 1 is a user error: at planning time when it is a
/// literal, otherwise when the offending row is evaluated.
///
/// # Example
///
/// ```
/// use datafusion::prelude::SessionContext;
///
/// let ctx = SessionContext::new();
/// ctx.register_udf(volley_udfs::geohash_parent_udf());
/// // SELECT geohash_parent('u4pruy', 4)  -->  'u4pr'
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GeohashParentFunc {
    signature: Signature,
}

impl Default for GeohashParentFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl GeohashParentFunc {
    /// Creates the UDF implementation.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for GeohashParentFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [geohash, precision] = arg_types else {
            return plan_err!(
                "{NAME} expects 2 arguments (geohash, precision), got {}",
                arg_types.len()
            );
        };
        Ok(vec![
            coerce_to_utf8(NAME, "geohash", geohash)?,
            coerce_to_i64(NAME, "precision", precision)?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let [geohash, precision] = take_args::<2>(NAME, args.args)?;
        let geohash = geohash.into_array(rows)?;
        let precision = Precision::try_new(NAME, &precision)?;
        let out = parent_array(as_string_array(&geohash)?, &precision)?;
        if scalar {
            ScalarValue::try_from_array(&out, 0).map(ColumnarValue::Scalar)
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // Report a bad literal precision while planning, even if no row ever arrives.
        if let Some(Expr::Literal(ScalarValue::Int64(Some(precision)), _)) = args.get(1) {
            check_precision(*precision).map_err(|msg| plan_datafusion_err!("{msg}"))?;
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// Returns the `geohash_parent(geohash, precision)` UDF, ready to register.
pub fn geohash_parent_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(GeohashParentFunc::new())
}

/// Checks that a precision is at least 1; the error is the user-facing message.
fn check_precision(precision: i64) -> std::result::Result<usize, String> {
    match usize::try_from(precision) {
        Ok(chars) if chars >= 1 => Ok(chars),
        _ => Err(format!(
            "{NAME}: precision must be at least 1, got {precision}"
        )),
    }
}

/// Truncates every string of `geohash` to its row's precision.
fn parent_array(geohash: &StringArray, precision: &Precision<'_>) -> Result<ArrayRef> {
    let rows = geohash.len();
    let fixed = match precision {
        Precision::Scalar(None) => return Ok(new_null_array(&DataType::Utf8, rows)),
        Precision::Scalar(Some(p)) => {
            Some(check_precision(*p).map_err(|msg| exec_datafusion_err!("{msg}"))?)
        }
        Precision::Array(array) if array.len() != rows => {
            return internal_err!(
                "{NAME}: geohash has {rows} rows but precision has {}",
                array.len()
            );
        }
        Precision::Array(_) => None,
    };
    // Output bytes never exceed input bytes.
    let input_bytes = geohash.value_data().len();
    let out_bytes = fixed.map_or(input_bytes, |chars| {
        input_bytes.min(rows.saturating_mul(chars))
    });
    let mut builder = StringBuilder::with_capacity(rows, out_bytes);

    for (row, hash) in geohash.iter().enumerate() {
        let chars = match fixed {
            Some(chars) => chars,
            None => match precision.get(row) {
                Some(p) => check_precision(p).map_err(|msg| exec_datafusion_err!("{msg}"))?,
                None => {
                    builder.append_null();
                    continue;
                }
            },
        };
        match hash {
            Some(hash) => builder.append_value(prefix(hash, chars)),
            None => builder.append_null(),
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// The first `chars` characters of `s` (all of `s` if it is shorter).
fn prefix(s: &str, chars: usize) -> &str {
    match s.char_indices().nth(chars) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array, StringArray};

    use super::{parent_array, prefix};
    use crate::args::Precision;
    use crate::test_util::{context, strings};

    fn owned(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(String::from)).collect()
    }

    #[test]
    fn prefix_counts_characters_not_bytes() {
        assert_eq!(prefix("u4pruy", 4), "u4pr");
        assert_eq!(prefix("u4pruy", 6), "u4pruy");
        assert_eq!(prefix("u4pruy", 9), "u4pruy");
        assert_eq!(prefix("", 3), "");
        assert_eq!(prefix("éàü", 2), "éà");
    }

    #[tokio::test]
    async fn rolls_geohash6_up_to_4_and_5() {
        let sql =
            "SELECT geohash_parent(g, 4) FROM (VALUES ('9q8yyk'), ('u09tvw'), (NULL)) AS v(g)";
        assert_eq!(
            strings(sql).await,
            owned(&[Some("9q8y"), Some("u09t"), None])
        );
        let sql = "SELECT geohash_parent(geohash(lat, lon, 6), 5) \
                   FROM (VALUES (37.7749, -122.4194)) AS v(lat, lon)";
        assert_eq!(strings(sql).await, owned(&[Some("9q8yy")]));
    }

    #[tokio::test]
    async fn longer_precision_returns_input_unchanged() {
        let sql = "SELECT geohash_parent('u4pr', 12)";
        assert_eq!(strings(sql).await, owned(&[Some("u4pr")]));
    }

    #[tokio::test]
    async fn accepts_utf8view_and_large_utf8() {
        let sql = "SELECT geohash_parent(arrow_cast(g, 'Utf8View'), 2) FROM (VALUES ('u4pruy')) AS v(g) \
                   UNION ALL \
                   SELECT geohash_parent(arrow_cast(g, 'LargeUtf8'), 3) FROM (VALUES ('u4pruy')) AS v(g)";
        let mut got = strings(sql).await;
        got.sort();
        assert_eq!(got, owned(&[Some("u4"), Some("u4p")]));
    }

    #[tokio::test]
    async fn null_precision_gives_null() {
        let sql = "SELECT geohash_parent(g, p) FROM (VALUES ('u4pruy', CAST(NULL AS INT)), ('u4pruy', 1)) AS v(g, p)";
        assert_eq!(strings(sql).await, owned(&[None, Some("u")]));
    }

    #[tokio::test]
    async fn literal_precision_below_one_fails_at_planning() {
        let sql = "SELECT geohash_parent(g, 0) FROM (VALUES ('u4pruy')) AS v(g)";
        let df = context().sql(sql).await.unwrap();
        let msg = df.into_optimized_plan().unwrap_err().to_string();
        assert!(
            msg.contains("geohash_parent: precision must be at least 1, got 0"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn column_precision_below_one_fails_at_execution() {
        let sql =
            "SELECT geohash_parent(g, p) FROM (VALUES ('u4pruy', 2), ('u4pruy', -3)) AS v(g, p)";
        let msg = context()
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("geohash_parent: precision must be at least 1, got -3"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn rejects_non_string_geohash() {
        let msg = context()
            .sql("SELECT geohash_parent(42, 2)")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("geohash_parent: argument `geohash` must be a string"),
            "{msg}"
        );
    }

    #[test]
    fn column_precision_is_per_row() {
        let hashes = StringArray::from(vec![Some("u4pruy"), Some("u4pruy"), None, Some("9q")]);
        let precision = Int64Array::from(vec![Some(1), None, Some(3), Some(5)]);
        let out = parent_array(&hashes, &Precision::Array(&precision)).unwrap();
        let got: Vec<_> = out.as_string::<i32>().iter().collect();
        assert_eq!(got, [Some("u"), None, None, Some("9q")]);
    }
}

//! `geohash(lat, lon, precision)`: the standard base32 geohash of a point.
//!
//! The encoder bisects the longitude and latitude ranges alternately (longitude
//! first), five bits per output character, using the alphabet
//! `0123456789bcdefghjkmnpqrstuvwxyz`. The kernel walks the raw `f64` value
//! buffers and writes into one pre-sized `StringBuilder`: no per-row
//! `ScalarValue` and no per-row allocation.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, Float64Array, StringBuilder, new_null_array};
use arrow::buffer::NullBuffer;
use arrow::datatypes::DataType;
use datafusion::common::cast::as_float64_array;
use datafusion::common::{
    Result, ScalarValue, exec_datafusion_err, internal_err, plan_datafusion_err, plan_err,
};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_OTHER;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::args::{Precision, all_scalar, coerce_to_f64, coerce_to_i64, take_args};

const NAME: &str = "geohash";

/// Shortest geohash `geohash` produces.
pub const MIN_GEOHASH_PRECISION: i64 = 1;
/// Longest geohash `geohash` produces (60 bits, about 3.7 cm x 1.9 cm).
pub const MAX_GEOHASH_PRECISION: i64 = 12;

/// Output buffer for one geohash: `MAX_GEOHASH_PRECISION` ASCII bytes.
type GeohashBuf = [u8; MAX_GEOHASH_PRECISION as usize];

const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_OTHER,
        "Base32 geohash of the point (`lat`, `lon`) with `precision` characters. Returns NULL \
         when any argument is NULL, or when `lat` is outside [-90, 90] or `lon` outside \
         [-180, 180] (NaN included).",
        "geohash(lat, lon, precision)",
    )
    .with_sql_example("SELECT geohash(57.64911, 10.40744, 11); -- u4pruydqqvj")
    .with_argument("lat", "Latitude in degrees, any numeric type.")
    .with_argument("lon", "Longitude in degrees, any numeric type.")
    .with_argument(
        "precision",
        "Number of characters, an integer from 1 to 12.",
    )
    .with_related_udf("geohash_parent")
    .build()
});

/// The `geohash(lat DOUBLE, lon DOUBLE, precision INT) -> VARCHAR` scalar UDF.
///
/// * Any numeric `lat`/`lon` is coerced to `DOUBLE`, any integer `precision`
///   to `BIGINT`; other types are a planning error.
/// * A `NULL` argument gives `NULL`.
/// * Coordinates outside the globe (`lat` not in `[-90, 90]`, `lon` not in
///   `[-180, 180]`, or NaN) give `NULL` rather than an error, so one bad GPS
///   fix does not fail a long-running pipeline.
///
/// # Errors
///
/// A `precision` outside `1..=12` is a user error: at planning time when it is
/// a literal, otherwise when the offending row is evaluated.
///
/// # Example
///
/// ```
/// use datafusion::prelude::SessionContext;
///
/// let ctx = SessionContext::new();
/// ctx.register_udf(volley_udfs::geohash_udf());
/// // SELECT geohash(57.64911, 10.40744, 11)  -->  'u4pruydqqvj'
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GeohashFunc {
    signature: Signature,
}

impl Default for GeohashFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl GeohashFunc {
    /// Creates the UDF implementation.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for GeohashFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [lat, lon, precision] = arg_types else {
            return plan_err!(
                "{NAME} expects 3 arguments (lat, lon, precision), got {}",
                arg_types.len()
            );
        };
        Ok(vec![
            coerce_to_f64(NAME, "lat", lat)?,
            coerce_to_f64(NAME, "lon", lon)?,
            coerce_to_i64(NAME, "precision", precision)?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = all_scalar(&args.args);
        let rows = if scalar { 1 } else { args.number_rows };
        let [lat, lon, precision] = take_args::<3>(NAME, args.args)?;
        // Scalar coordinates with a column precision are rare; expanding them
        // keeps a single kernel.
        let lat = lat.into_array(rows)?;
        let lon = lon.into_array(rows)?;
        let precision = Precision::try_new(NAME, &precision)?;
        let out = geohash_array(as_float64_array(&lat)?, as_float64_array(&lon)?, &precision)?;
        if scalar {
            ScalarValue::try_from_array(&out, 0).map(ColumnarValue::Scalar)
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // Report a bad literal precision while planning, even if no row ever arrives.
        if let Some(Expr::Literal(ScalarValue::Int64(Some(precision)), _)) = args.get(2) {
            check_precision(*precision).map_err(|msg| plan_datafusion_err!("{msg}"))?;
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// Returns the `geohash(lat, lon, precision)` UDF, ready to register.
pub fn geohash_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(GeohashFunc::new())
}

/// Checks a precision against `1..=12`; the error is the user-facing message.
fn check_precision(precision: i64) -> std::result::Result<usize, String> {
    if (MIN_GEOHASH_PRECISION..=MAX_GEOHASH_PRECISION).contains(&precision) {
        // In 1..=12, so the cast is lossless.
        Ok(precision as usize)
    } else {
        Err(format!(
            "{NAME}: precision must be between {MIN_GEOHASH_PRECISION} and \
             {MAX_GEOHASH_PRECISION}, got {precision}"
        ))
    }
}

/// Geohashes whole columns. `lat`, `lon` (and a column `precision`) must have
/// the same length.
fn geohash_array(
    lat: &Float64Array,
    lon: &Float64Array,
    precision: &Precision<'_>,
) -> Result<ArrayRef> {
    let rows = lat.len();
    if lon.len() != rows {
        return internal_err!("{NAME}: lat has {rows} rows but lon has {}", lon.len());
    }
    let fixed = match precision {
        Precision::Scalar(None) => return Ok(new_null_array(&DataType::Utf8, rows)),
        Precision::Scalar(Some(p)) => {
            Some(check_precision(*p).map_err(|msg| exec_datafusion_err!("{msg}"))?)
        }
        Precision::Array(array) if array.len() != rows => {
            return internal_err!(
                "{NAME}: lat has {rows} rows but precision has {}",
                array.len()
            );
        }
        Precision::Array(_) => None,
    };
    let nulls = NullBuffer::union(lat.nulls(), lon.nulls());
    let per_row = fixed.unwrap_or(MAX_GEOHASH_PRECISION as usize);
    let mut builder = StringBuilder::with_capacity(rows, rows * per_row);
    let mut buf: GeohashBuf = [0; MAX_GEOHASH_PRECISION as usize];

    for (row, (&lat, &lon)) in lat.values().iter().zip(lon.values().iter()).enumerate() {
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
        let valid = nulls.as_ref().is_none_or(|n| n.is_valid(row))
            && (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon);
        if valid {
            builder.append_value(encode(lat, lon, chars, &mut buf)?);
        } else {
            builder.append_null();
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// Encodes one in-range point into the first `chars` bytes of `buf`.
fn encode(lat: f64, lon: f64, chars: usize, buf: &mut GeohashBuf) -> Result<&str> {
    let (mut lat_lo, mut lat_hi) = (-90.0_f64, 90.0_f64);
    let (mut lon_lo, mut lon_hi) = (-180.0_f64, 180.0_f64);
    let mut lon_bit = true;
    for slot in buf.iter_mut().take(chars) {
        let mut index = 0_usize;
        for _ in 0..5 {
            let (value, lo, hi) = if lon_bit {
                (lon, &mut lon_lo, &mut lon_hi)
            } else {
                (lat, &mut lat_lo, &mut lat_hi)
            };
            let mid = (*lo + *hi) / 2.0;
            index <<= 1;
            if value >= mid {
                index |= 1;
                *lo = mid;
            } else {
                *hi = mid;
            }
            lon_bit = !lon_bit;
        }
        *slot = BASE32[index];
    }
    match buf.get(..chars).map(std::str::from_utf8) {
        Some(Ok(hash)) => Ok(hash),
        _ => internal_err!("{NAME}: encoded {chars} characters into a non-ASCII buffer"),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray, Float64Array, Int64Array};

    use super::{GeohashBuf, encode, geohash_array};
    use crate::args::Precision;
    use crate::test_util::{context, strings};

    #[test]
    fn encodes_reference_points() {
        let mut buf: GeohashBuf = Default::default();
        assert_eq!(
            encode(57.64911, 10.40744, 11, &mut buf).unwrap(),
            "u4pruydqqvj"
        );
        assert_eq!(encode(37.7749, -122.4194, 6, &mut buf).unwrap(), "9q8yyk");
        assert_eq!(encode(48.8566, 2.3522, 5, &mut buf).unwrap(), "u09tv");
        assert_eq!(encode(0.0, 0.0, 1, &mut buf).unwrap(), "s");
        assert_eq!(encode(-90.0, -180.0, 12, &mut buf).unwrap(), "000000000000");
        assert_eq!(encode(90.0, 180.0, 12, &mut buf).unwrap(), "zzzzzzzzzzzz");
    }

    #[tokio::test]
    async fn sql_matches_known_geohashes() {
        let sql = "SELECT geohash(lat, lon, p) FROM (VALUES \
            (57.64911, 10.40744, 11), \
            (37.7749, -122.4194, 6), \
            (48.8566, 2.3522, 5)) AS v(lat, lon, p)";
        assert_eq!(
            strings(sql).await,
            [Some("u4pruydqqvj"), Some("9q8yyk"), Some("u09tv")].map(|s| s.map(String::from))
        );
    }

    #[tokio::test]
    async fn literal_precision_and_constant_folding() {
        assert_eq!(
            strings("SELECT geohash(57.64911, 10.40744, 11)").await,
            [Some("u4pruydqqvj".to_string())]
        );
        let sql = "SELECT geohash(lat, lon, 4) FROM (VALUES (37.7749, -122.4194)) AS v(lat, lon)";
        assert_eq!(strings(sql).await, [Some("9q8y".to_string())]);
    }

    #[tokio::test]
    async fn coerces_float32_and_integer_inputs() {
        let sql =
            "SELECT geohash(CAST(48.8566 AS REAL), CAST(2.3522 AS REAL), CAST(5 AS SMALLINT))";
        assert_eq!(strings(sql).await, [Some("u09tv".to_string())]);
        assert_eq!(
            strings("SELECT geohash(0, 0, 1)").await,
            [Some("s".to_string())]
        );
    }

    #[tokio::test]
    async fn nulls_and_off_globe_points_give_null() {
        let sql = "SELECT geohash(lat, lon, p) FROM (VALUES \
            (CAST(NULL AS DOUBLE), 1.0, 5), \
            (1.0, CAST(NULL AS DOUBLE), 5), \
            (1.0, 1.0, CAST(NULL AS INT)), \
            (90.5, 0.0, 5), \
            (0.0, -180.5, 5), \
            (CAST('NaN' AS DOUBLE), 0.0, 5), \
            (0.0, 0.0, 1)) AS v(lat, lon, p)";
        let mut expected = vec![None; 6];
        expected.push(Some("s".to_string()));
        assert_eq!(strings(sql).await, expected);
    }

    #[tokio::test]
    async fn literal_precision_out_of_range_fails_at_planning() {
        for bad in [0, 13, -1] {
            let sql =
                format!("SELECT geohash(lat, lon, {bad}) FROM (VALUES (1.0, 2.0)) AS v(lat, lon)");
            let df = context().sql(&sql).await.unwrap();
            let msg = df.into_optimized_plan().unwrap_err().to_string();
            assert!(
                msg.contains(&format!(
                    "geohash: precision must be between 1 and 12, got {bad}"
                )),
                "{msg}"
            );
        }
    }

    #[tokio::test]
    async fn column_precision_out_of_range_fails_at_execution() {
        let sql = "SELECT geohash(lat, lon, p) FROM (VALUES (1.0, 2.0, 5), (1.0, 2.0, 13)) AS v(lat, lon, p)";
        let msg = context()
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("geohash: precision must be between 1 and 12, got 13"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn rejects_non_numeric_coordinates() {
        let msg = context()
            .sql("SELECT geohash('north', 2.0, 5)")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("geohash: argument `lat` must be numeric, got Utf8"),
            "{msg}"
        );
    }

    #[test]
    fn column_precision_is_per_row() {
        let lat = Float64Array::from(vec![57.64911, 57.64911, 57.64911]);
        let lon = Float64Array::from(vec![10.40744, 10.40744, 10.40744]);
        let precision = Int64Array::from(vec![Some(1), None, Some(11)]);
        let out = geohash_array(&lat, &lon, &Precision::Array(&precision)).unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [Some("u"), None, Some("u4pruydqqvj")]
        );
    }

    /// Correctness at batch scale: 100k rows in, 100k geohashes out, each
    /// equal to the single-point encoder's answer.
    #[test]
    fn hundred_thousand_rows() {
        const ROWS: usize = 100_000;
        let lat: Float64Array = (0..ROWS)
            .map(|i| -90.0 + 180.0 * i as f64 / ROWS as f64)
            .collect();
        let lon: Float64Array = (0..ROWS)
            .map(|i| 180.0 - 360.0 * i as f64 / ROWS as f64)
            .collect();
        let out = geohash_array(&lat, &lon, &Precision::Scalar(Some(7))).unwrap();
        assert_eq!(out.len(), ROWS);
        assert_eq!(out.null_count(), 0);
        let hashes = out.as_string::<i32>();
        let mut buf: GeohashBuf = Default::default();
        for row in [0, 1, ROWS / 2, ROWS - 1] {
            let expected = encode(lat.value(row), lon.value(row), 7, &mut buf).unwrap();
            assert_eq!(hashes.value(row), expected);
        }
        assert!(hashes.iter().flatten().all(|h| h.len() == 7));
    }
}

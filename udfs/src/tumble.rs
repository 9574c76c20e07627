//! `tumble(ts, interval)`: the tumbling-window start of a timestamp.
//!
//! `tumble` is sugar for DataFusion's builtin `date_bin(interval, ts)` with the
//! origin at the Unix epoch. It exists so that streaming SQL reads naturally
//! (`GROUP BY tumble(ts, INTERVAL '1 minute')`) while every plan the engine
//! sees contains only `date_bin`, the one expression the window planner and
//! DataFusion's ordering analysis understand:
//!
//! ```text
//!   tumble(ts, INTERVAL '1 minute')
//!            |  ScalarUDFImpl::simplify (expression simplifier)
//!            v
//!   date_bin(INTERVAL '1 minute', ts)
//! ```
//!
//! If a plan is executed without simplification, `invoke_with_args` swaps the
//! arguments and runs `date_bin`'s kernel, so the result is identical either way.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, plan_err};
use datafusion::functions::datetime::date_bin;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_DATETIME;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

const NAME: &str = "tumble";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_DATETIME,
        "Start of the tumbling window of width `interval` that contains `ts`; windows are \
         aligned to the Unix epoch. Equivalent to `date_bin(interval, ts)`.",
        "tumble(ts, interval)",
    )
    .with_sql_example(
        "SELECT tumble(ts, INTERVAL '1 minute') AS w, count(*) FROM events GROUP BY w",
    )
    .with_argument(
        "ts",
        "Timestamp to assign to a window (any unit, with or without time zone).",
    )
    .with_argument("interval", "Window width, e.g. `INTERVAL '5 minutes'`.")
    .with_related_udf("date_bin")
    .build()
});

/// The `tumble(ts, interval)` scalar UDF.
///
/// Returns the start of the tumbling window of width `interval` containing
/// `ts`, exactly as `date_bin(interval, ts)` does (origin = Unix epoch; the
/// result has the type of `ts`). Argument types are coerced with `date_bin`'s
/// own rules, so anything `date_bin` accepts `tumble` accepts.
///
/// # Errors
///
/// Planning fails when the arguments are not a timestamp and an interval;
/// execution fails where `date_bin` fails (for example a zero interval).
///
/// # Example
///
/// ```
/// use datafusion::prelude::SessionContext;
///
/// let ctx = SessionContext::new();
/// ctx.register_udf(volley_udfs::tumble_udf());
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TumbleFunc {
    signature: Signature,
    date_bin: Arc<ScalarUDF>,
}

impl Default for TumbleFunc {
    fn default() -> Self {
        Self::new()
    }
}

impl TumbleFunc {
    /// Creates the UDF implementation, bound to DataFusion's `date_bin`.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            date_bin: date_bin(),
        }
    }
}

/// Reorders `[ts, interval]` into `date_bin`'s `[interval, ts]` (and back:
/// the swap is its own inverse).
fn swap<T>(mut pair: Vec<T>) -> Vec<T> {
    pair.swap(0, 1);
    pair
}

impl ScalarUDFImpl for TumbleFunc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [ts, interval] = arg_types else {
            return plan_err!(
                "{NAME} expects 2 arguments (ts, interval), got {}",
                arg_types.len()
            );
        };
        // Reuse date_bin's coercion so the two functions can never disagree.
        let fields = [interval, ts].map(|t| Arc::new(Field::new("arg", t.clone(), true)));
        match fields_with_udf(&fields, self.date_bin.as_ref()) {
            Ok(coerced) => Ok(swap(
                coerced.iter().map(|f| f.data_type().clone()).collect(),
            )),
            Err(_) => plan_err!(
                "{NAME}(ts, interval) needs a timestamp and an interval, got ({ts}, {interval})"
            ),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [ts, interval] = arg_types else {
            return plan_err!(
                "{NAME} expects 2 arguments (ts, interval), got {}",
                arg_types.len()
            );
        };
        self.date_bin.return_type(&[interval.clone(), ts.clone()])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // Only reached when a plan skipped simplification.
        self.date_bin.invoke_with_args(ScalarFunctionArgs {
            args: swap(args.args),
            arg_fields: swap(args.arg_fields),
            number_rows: args.number_rows,
            return_field: args.return_field,
            config_options: args.config_options,
        })
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if args.len() != 2 {
            return Ok(ExprSimplifyResult::Original(args));
        }
        Ok(ExprSimplifyResult::Simplified(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::clone(&self.date_bin), swap(args)),
        )))
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        // Windows are monotonic in `ts`: same answer as date_bin.
        match inputs {
            [ts, interval] => self
                .date_bin
                .output_ordering(&[interval.clone(), ts.clone()]),
            _ => Ok(SortProperties::Unordered),
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// Returns the `tumble(ts, interval)` UDF, ready to register.
pub fn tumble_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(TumbleFunc::new())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit};
    use datafusion::common::ScalarValue;
    use datafusion::common::config::ConfigOptions;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::functions::datetime::date_bin;
    use datafusion::logical_expr::{ColumnarValue, Expr, ScalarFunctionArgs};

    use super::tumble_udf;
    use crate::test_util::{context, query};

    const EVENTS: &str = "(VALUES \
        (TIMESTAMP '2024-01-01T00:00:00'), \
        (TIMESTAMP '2024-01-01T00:00:59.999'), \
        (TIMESTAMP '2024-01-01T00:01:00'), \
        (TIMESTAMP '1969-12-31T23:59:30'), \
        (NULL)) AS v(ts)";

    #[tokio::test]
    async fn tumble_equals_date_bin() {
        let sql = format!(
            "SELECT ts, tumble(ts, INTERVAL '1 minute') AS t, \
                    date_bin(INTERVAL '1 minute', ts) AS d FROM {EVENTS}"
        );
        let batches = context().sql(&sql).await.unwrap().collect().await.unwrap();
        for batch in &batches {
            assert_eq!(batch.column(1).as_ref(), batch.column(2).as_ref());
        }
        let table = query(&sql).await;
        assert_eq!(
            table,
            [
                "+-------------------------+---------------------+---------------------+",
                "| ts                      | t                   | d                   |",
                "+-------------------------+---------------------+---------------------+",
                "| 2024-01-01T00:00:00     | 2024-01-01T00:00:00 | 2024-01-01T00:00:00 |",
                "| 2024-01-01T00:00:59.999 | 2024-01-01T00:00:00 | 2024-01-01T00:00:00 |",
                "| 2024-01-01T00:01:00     | 2024-01-01T00:01:00 | 2024-01-01T00:01:00 |",
                "| 1969-12-31T23:59:30     | 1969-12-31T23:59:00 | 1969-12-31T23:59:00 |",
                "|                         |                     |                     |",
                "+-------------------------+---------------------+---------------------+",
            ]
        );
    }

    #[tokio::test]
    async fn tumble_keeps_unit_and_time_zone_of_ts() {
        let sql = "SELECT arrow_typeof(tumble(to_timestamp_millis(0), INTERVAL '1 hour')) AS a, \
                          arrow_typeof(tumble(to_timestamp(0) AT TIME ZONE 'UTC', INTERVAL '1 hour')) AS b";
        let sql_bin = "SELECT arrow_typeof(date_bin(INTERVAL '1 hour', to_timestamp_millis(0))) AS a, \
                              arrow_typeof(date_bin(INTERVAL '1 hour', to_timestamp(0) AT TIME ZONE 'UTC')) AS b";
        let types = query(sql).await;
        assert_eq!(
            types,
            [
                "+---------------+----------------------+",
                "| a             | b                    |",
                "+---------------+----------------------+",
                "| Timestamp(ms) | Timestamp(ns, \"UTC\") |",
                "+---------------+----------------------+",
            ]
        );
        assert_eq!(types, query(sql_bin).await);
    }

    #[tokio::test]
    async fn grouped_plan_contains_only_date_bin() {
        let sql = format!(
            "SELECT tumble(ts, INTERVAL '1 minute') AS w, count(*) AS n FROM {EVENTS} \
             GROUP BY tumble(ts, INTERVAL '1 minute')"
        );
        let plan = context()
            .sql(&sql)
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let shown = plan.display_indent().to_string();
        assert!(shown.contains("date_bin("), "plan:\n{shown}");

        let mut tumble_calls = 0;
        plan.apply(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if matches!(e, Expr::ScalarFunction(f) if f.name() == "tumble") {
                        tumble_calls += 1;
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })
        .unwrap();
        assert_eq!(tumble_calls, 0, "plan:\n{shown}");
    }

    #[tokio::test]
    async fn grouped_result_counts_rows_per_window() {
        let sql = format!(
            "SELECT tumble(ts, INTERVAL '1 minute') AS w, count(*) AS n FROM {EVENTS} \
             GROUP BY tumble(ts, INTERVAL '1 minute') ORDER BY w NULLS LAST"
        );
        assert_eq!(
            query(&sql).await,
            [
                "+---------------------+---+",
                "| w                   | n |",
                "+---------------------+---+",
                "| 1969-12-31T23:59:00 | 1 |",
                "| 2024-01-01T00:00:00 | 2 |",
                "| 2024-01-01T00:01:00 | 1 |",
                "|                     | 1 |",
                "+---------------------+---+",
            ]
        );
    }

    #[tokio::test]
    async fn rejects_non_timestamp_arguments() {
        let msg = context()
            .sql("SELECT tumble(1.5, INTERVAL '1 minute')")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tumble(ts, interval) needs a timestamp and an interval"),
            "{msg}"
        );
    }

    /// Executing `tumble` directly (no simplifier) must match `date_bin`.
    #[test]
    fn invoke_without_simplify_matches_date_bin() {
        let ts: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            Some(0),
            Some(61_000_000_000),
            Some(-1),
            None,
        ]));
        let interval = ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(0, 0, 60_000_000_000),
        )));
        let ts_type = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let ts_field = Arc::new(Field::new("ts", ts_type.clone(), true));
        let iv_field = Arc::new(Field::new("iv", interval.data_type(), false));
        let return_field = Arc::new(Field::new("out", ts_type, true));
        let config_options = Arc::new(ConfigOptions::default());

        let ours = tumble_udf()
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(Arc::clone(&ts)), interval.clone()],
                arg_fields: vec![Arc::clone(&ts_field), Arc::clone(&iv_field)],
                number_rows: ts.len(),
                return_field: Arc::clone(&return_field),
                config_options: Arc::clone(&config_options),
            })
            .unwrap()
            .to_array(ts.len())
            .unwrap();
        let theirs = date_bin()
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![interval, ColumnarValue::Array(Arc::clone(&ts))],
                arg_fields: vec![iv_field, ts_field],
                number_rows: ts.len(),
                return_field,
                config_options,
            })
            .unwrap()
            .to_array(ts.len())
            .unwrap();
        assert_eq!(ours.as_ref(), theirs.as_ref());
        let expected = TimestampNanosecondArray::from(vec![
            Some(0),
            Some(60_000_000_000),
            Some(-60_000_000_000),
            None,
        ]);
        assert_eq!(ours.as_ref(), &expected as &dyn Array);
    }
}

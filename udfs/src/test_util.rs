//! Helpers that let the SQL tests read like data.

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

/// A fresh context with every Volley UDF registered.
pub(crate) fn context() -> SessionContext {
    let ctx = SessionContext::new();
    crate::register_all(&ctx);
    ctx
}

/// Runs `sql` and returns the result as the lines of a pretty-printed table.
pub(crate) async fn query(sql: &str) -> Vec<String> {
    let batches = context().sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs `sql` and returns its first column, cast to strings, in output order.
pub(crate) async fn strings(sql: &str) -> Vec<Option<String>> {
    let batches = context().sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|batch| {
            let column = cast(batch.column(0), &DataType::Utf8).unwrap();
            column
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(String::from))
                .collect::<Vec<_>>()
        })
        .collect()
}

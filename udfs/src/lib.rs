//! Scalar UDFs for Volley pipelines.
//!
//! | function | returns | purpose |
//! |---|---|---|
//! | `tumble(ts, interval)` | type of `ts` | tumbling-window start; rewritten to `date_bin(interval, ts)` during planning |
//! | `geohash(lat, lon, precision)` | `VARCHAR` | base32 geohash of a point, 1 to 12 characters |
//! | `geohash_parent(geohash, precision)` | `VARCHAR` | enclosing geohash cell: the first `precision` characters |
//! | `predict('model', x1, …, xk)` | `FLOAT`, fixed-size list or struct | a declared ONNX model over the whole batch |
//! | `canonical_float(x)` | type of `x` | -0.0 as +0.0, every NaN as one NaN (what DISTINCT compares) |
//! | `infinite_as_nan(x)` | type of `x` | ±inf as NaN |
//!
//! Every function is vectorized over whole Arrow arrays and handles the common
//! case of a literal argument without expanding it to a column.
//!
//! [`model`] runs ONNX models over whole Arrow batches (one `[rows, k]` f32 tensor per call):
//! the runtime of `predict()`. [`register_all`] registers `predict()` over no model; a pipeline
//! registers it again over the models it declares ([`model::predict_udf`]).
//!
//! # Example
//!
//! ```
//! use datafusion::prelude::SessionContext;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> datafusion::common::Result<()> {
//! let ctx = SessionContext::new();
//! volley_udfs::register_all(&ctx);
//! let batches = ctx
//!     .sql("SELECT geohash_parent(geohash(48.8566, 2.3522, 6), 5) AS cell")
//!     .await?
//!     .collect()
//!     .await?;
//! assert_eq!(batches[0].num_rows(), 1);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aggregate;
mod args;
mod geohash;
mod geohash_parent;
pub mod hop;
pub mod model;
mod tumble;

#[cfg(test)]
mod test_util;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

pub use geohash::{GeohashFunc, MAX_GEOHASH_PRECISION, MIN_GEOHASH_PRECISION, geohash_udf};
pub use geohash_parent::{GeohashParentFunc, geohash_parent_udf};
pub use hop::{HopFunc, hop_pane_udf, hop_udf};
pub use tumble::{TumbleFunc, tumble_udf};

/// Every UDF of this crate, in a stable order (`tumble`, `geohash`,
/// `geohash_parent`, `predict` over no model, `canonical_float`, `infinite_as_nan`, `hop`,
/// `hop_pane`).
pub fn all_udfs() -> Vec<ScalarUDF> {
    vec![
        tumble_udf(),
        geohash_udf(),
        geohash_parent_udf(),
        model::predict_udf(std::sync::Arc::new(model::ModelSet::default())),
        aggregate::canonical_float_udf(),
        aggregate::infinite_as_nan_udf(),
        hop_udf(),
        hop_pane_udf(),
    ]
}

/// Registers every UDF of [`all_udfs`] with `ctx`, replacing any function of
/// the same name, the [`aggregate`] overrides in place of the built-ins whose answer
/// depends on row order, and the [`aggregate::DeterministicAggregates`] rewrite.
pub fn register_all(ctx: &SessionContext) {
    for udf in all_udfs() {
        ctx.register_udf(udf);
    }
    for udaf in aggregate::aggregate_overrides() {
        ctx.register_udaf(udaf);
    }
    ctx.add_analyzer_rule(std::sync::Arc::new(aggregate::DeterministicAggregates));
}

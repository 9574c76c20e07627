//! Which column of a side is a window: a window column of the node below (its port says so),
//! or a bucket of a source's event time computed in a projection of the side.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use volley_sql::stream::graph::OutputPort;
use volley_sql::stream::trace::{ColumnOrigin, column_of, trace_column};
use volley_sql::stream::window::{BucketSize, as_bucket, nanos_per_unit};

/// What a side's column is as a window.
#[derive(Debug, Clone)]
pub(super) enum SideWindow {
    /// A windowed aggregate's window column.
    Aggregate {
        /// Its output name.
        input: String,
        /// Window width in `unit`s.
        width: i64,
        /// Unit.
        unit: TimeUnit,
    },
    /// A bucket of a source's event time, computed in a projection of the side.
    Bucket {
        /// The bucket expression (over the projection's input).
        expr: Arc<dyn PhysicalExpr>,
        /// The type of its time argument there.
        ts_type: DataType,
        /// Where the time comes from.
        origins: Vec<ColumnOrigin>,
        /// Window width in `unit`s.
        width: i64,
        /// Unit.
        unit: TimeUnit,
    },
}

impl SideWindow {
    /// Width and unit.
    pub(super) fn size(&self) -> (i64, TimeUnit) {
        match self {
            SideWindow::Aggregate { width, unit, .. } | SideWindow::Bucket { width, unit, .. } => {
                (*width, *unit)
            }
        }
    }
}

/// Output column `column` of `side` as a window, if it is one: a window column of the node
/// below (one of `ports`), or a bucket of a source's event time.
pub(super) fn side_window(
    side: &Arc<dyn ExecutionPlan>,
    column: usize,
    ports: &[OutputPort],
) -> Option<SideWindow> {
    if let Some(origins) = trace_column(side, column) {
        let first = origins.first()?;
        let time = volley_sql::stream::graph::port(ports, &first.input)?.time(first.column)?;
        // A hop window's rows are per window start, one every slide.
        let (width, unit) = time.step?;
        let same = origins
            .iter()
            .all(|o| o.input == first.input && o.column == first.column);
        return same.then(|| SideWindow::Aggregate {
            input: time.watermark.clone(),
            width,
            unit,
        });
    }
    bucket_of(side, column)
}

/// The bucket a side computes as its column `column`.
fn bucket_of(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<SideWindow> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        if let Some(c) = column_of(expr) {
            return bucket_of(projection.input(), c);
        }
        let bucket = as_bucket(expr).ok().flatten()?;
        let input = projection.input();
        let ts = column_of(&bucket.ts)?;
        let ts_type = input.schema().field(ts).data_type().clone();
        let DataType::Timestamp(unit, _) = expr.data_type(input.schema().as_ref()).ok()? else {
            return None;
        };
        let BucketSize::Nanos(nanos) = bucket.size else {
            return None;
        };
        let per = nanos_per_unit(unit);
        if nanos % per != 0 {
            return None;
        }
        let origins = trace_column(input, ts)?;
        return Some(SideWindow::Bucket {
            expr: Arc::clone(expr),
            ts_type,
            origins,
            width: nanos / per,
            unit,
        });
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(p) => *p.get(column)?,
            None => column,
        };
        return bucket_of(filter.input(), column);
    }
    if volley_sql::stream::capability::is_coalesce_batches(plan.as_ref())
        || matches!(plan.name(), "RepartitionExec" | "CooperativeExec")
    {
        return bucket_of(plan.children().first()?, column);
    }
    None
}


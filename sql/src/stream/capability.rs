//! What the streaming planner may do with each kind of DataFusion physical node: one table,
//! by type (downcasting), for every decision that depends on the node's kind.

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};

use super::leaf::EpochSourceExec;

/// How a node runs in a streaming plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Row by row (projection, filter, unnest, the epoch leaves): partitions of an epoch's
    /// rows may run apart and their outputs, concatenated in order, are the whole output.
    RowWise,
    /// Over one epoch's rows at a time, all of them together (union, sort, exchanges).
    PerEpoch,
    /// Not run by the streaming engine: why, and the rewrite that works.
    Refused(String),
}

/// The capability of `node`.
pub fn capability(node: &dyn ExecutionPlan) -> Capability {
    // A LIMIT may sit in any node DataFusion pushed it into (a sort's top N, a scan).
    if let Some(why) = super::order::limit_refusal(node, &[]) {
        return Capability::Refused(why);
    }
    if of::<ProjectionExec>(node)
        || of::<FilterExec>(node)
        || of::<CooperativeExec>(node)
        || of::<EpochSourceExec>(node)
        || of::<UnnestExec>(node)
        || is_coalesce_batches(node)
    {
        return Capability::RowWise;
    }
    if of::<CoalescePartitionsExec>(node)
        || of::<RepartitionExec>(node)
        || of::<UnionExec>(node)
        || of::<InterleaveExec>(node)
        || of::<SortExec>(node)
        || of::<SortPreservingMergeExec>(node)
        || of::<PlaceholderRowExec>(node)
        || of::<EmptyExec>(node)
    {
        return Capability::PerEpoch;
    }
    if of::<super::lookup::LookupScanExec>(node) {
        return Capability::Refused(
            "a table with no watermark, read beside a stream, is a lookup table: loaded once, it can only be joined to the stream (INNER or LEFT JOIN on equal keys, or WHERE key IN (SELECT …)); to read its rows as a stream of their own, declare a watermark on it".into(),
        );
    }
    if of::<HashJoinExec>(node) {
        return Capability::Refused(
            "a join of two streams is not streamed yet: to enrich a stream with a table, declare a watermark on the stream and none on the table, which is then a lookup table loaded once; or aggregate each stream into its own table and join those in `volley batch`".into(),
        );
    }
    if of::<NestedLoopJoinExec>(node)
        || of::<PiecewiseMergeJoinExec>(node)
        || of::<CrossJoinExec>(node)
    {
        return Capability::Refused(format!(
            "this join ({}) has no equality key: a streaming join with a lookup table needs one (ON stream.key = table.key, more conditions may follow with AND)",
            node.name()
        ));
    }
    if of::<SortMergeJoinExec>(node) || of::<SymmetricHashJoinExec>(node) {
        return Capability::Refused(format!(
            "this query needs a join ({}), which the streaming engine does not run yet: join in `volley batch`, or aggregate each input into its own table and join those",
            node.name()
        ));
    }
    if of::<BoundedWindowAggExec>(node) || of::<WindowAggExec>(node) {
        return Capability::Refused(
            "an OVER (...) window function is not streamed yet: group by a window instead (GROUP BY date_bin(INTERVAL ..., event_time), ...), or run `volley batch`".into(),
        );
    }
    Capability::Refused(format!(
        "this query needs {}, which the streaming engine does not run: run it with `volley batch`",
        node.name()
    ))
}

/// Whether `node` is a `T`.
fn of<T: ExecutionPlan + 'static>(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<T>().is_some()
}

/// `CoalesceBatchesExec` (deprecated in DataFusion, still planned by some rules): row by row.
#[expect(deprecated)]
pub fn is_coalesce_batches(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec>()
        .is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::limit::GlobalLimitExec;

    use super::*;

    #[test]
    fn nodes_are_recognised_by_type() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::clone(&schema)));
        assert_eq!(capability(empty.as_ref()), Capability::PerEpoch);
        let limit = GlobalLimitExec::new(Arc::clone(&empty), 0, Some(3));
        assert!(
            matches!(capability(&limit), Capability::Refused(why) if why.starts_with("LIMIT 3 over a stream"))
        );
        let offset = GlobalLimitExec::new(Arc::clone(&empty), 2, None);
        assert!(
            matches!(capability(&offset), Capability::Refused(why) if why.starts_with("OFFSET 2 over a stream"))
        );
        let cross = CrossJoinExec::new(Arc::clone(&empty), Arc::clone(&empty));
        assert!(
            matches!(capability(&cross), Capability::Refused(why) if why.contains("join (CrossJoinExec)") && why.contains("equality key"))
        );
    }
}

//! Per-partition watermarks: a partition that stays silent holds windows open until it is
//! idle for `idle_timeout`, then the other partitions' event time closes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::time::Instant;
use volley_connectors::{ConnectorRegistry, Position, Sink, Source, SourcePoll};
use volley_engine::memory::CollectSink;
use volley_engine::setup::{JobOverrides, build_stream_job};

use crate::harness::pipeline;

const SEC: i64 = 1_000_000_000;

/// Two partitions: "a" gives its rows at once, "b" never gives any; the source ends after
/// `lifetime` of wall time.
#[derive(Debug)]
struct OnePartitionTalks {
    rows: Option<RecordBatch>,
    read: u64,
    started: Instant,
    lifetime: Duration,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        Field::new("user_id", DataType::Int64, false),
    ]))
}

#[async_trait]
impl Source for OnePartitionTalks {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    async fn poll_batch(
        &mut self,
        _max_rows: usize,
        deadline: Instant,
    ) -> volley_connectors::Result<SourcePoll> {
        if let Some(rows) = self.rows.take() {
            self.read += rows.num_rows() as u64;
            return Ok(SourcePoll::Partitions(vec![("a".into(), rows)]));
        }
        if self.started.elapsed() >= self.lifetime {
            return Ok(SourcePoll::Exhausted);
        }
        tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(20))).await;
        Ok(SourcePoll::Pending)
    }

    fn position(&self) -> Position {
        Position(BTreeMap::from([("a".to_string(), self.read)]))
    }

    fn partitions(&self) -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    async fn seek(&mut self, _position: &Position) -> volley_connectors::Result<()> {
        Ok(())
    }
}

/// The epochs that emitted rows, for a run with the given idle timeout.
async fn emitting_epochs(idle_timeout: &str) -> (Vec<u64>, u64) {
    let sql = format!(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'unused.csv'
         OPTIONS ('watermark' 'ts - INTERVAL ''5 seconds''', 'idle_timeout' '{idle_timeout}', 'max_delay' '50 ms');
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x';
         INSERT INTO out SELECT date_bin(INTERVAL '10 seconds', ts) AS w, count(*) AS n FROM clicks GROUP BY 1;"
    );
    let p = pipeline(&sql).await;
    let rows = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from_iter_values(
                (0..40).map(|s| s * SEC),
            )),
            Arc::new(Int64Array::from_iter_values(0..40)),
        ],
    )
    .unwrap();
    let source = OnePartitionTalks {
        rows: Some(rows),
        read: 0,
        started: Instant::now(),
        lifetime: Duration::from_millis(1500),
    };
    let (sink, collected) = CollectSink::new();
    let overrides = JobOverrides {
        sources: HashMap::from([("clicks".to_string(), Box::new(source) as Box<dyn Source>)]),
        sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
        ..JobOverrides::default()
    };
    let (job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let summary = job.run().await.unwrap();
    let epochs = collected
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| b.iter().any(|b| b.num_rows() > 0))
        .map(|(e, _)| *e)
        .collect();
    (epochs, summary.epochs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_holds_windows_until_it_is_idle() {
    // Never idle within the run: nothing closes before the end of input flushes everything.
    let (epochs, last) = emitting_epochs("1 hour").await;
    assert_eq!(epochs, vec![last], "only the final flush emits");
    // Idle after 200 ms: partition "a"'s event time (39 s, watermark 34 s) closes [0,10),
    // [10,20) and [20,30) while the source is still running.
    let (epochs, last) = emitting_epochs("200 ms").await;
    assert!(
        epochs.len() >= 2 && epochs[0] < last,
        "{epochs:?} (last epoch {last})"
    );
}

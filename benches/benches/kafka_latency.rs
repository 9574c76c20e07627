//! End-to-end latency through Kafka at a fixed rate: a producer sends ride events at R per
//! second; a pipeline reads them (Kafka source, JSON) and writes a stateless projection and a
//! keyed upsert to Kafka sinks. For every row a sink has written (its `write_epoch` returned,
//! every message acknowledged by the broker), latency = that moment minus the message's
//! produce timestamp (its Kafka CreateTime, set by the producer when it sent the event).
//!
//! Needs a Kafka-protocol broker: `VOLLEY_KAFKA=127.0.0.1:19092 cargo bench -p volley-benches
//! --bench kafka_latency` (`bash .ci/run` shows how to start one). Without `VOLLEY_KAFKA` it
//! prints a note and exits.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use volley_benches::{SURGE, events};
use volley_connectors::{ConnectorRegistry, Sink};
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_sql::Pipeline;

const PARTITIONS: i32 = 3;

fn sql(broker: &str, topic: &str, max_delay: &str) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL, _timestamp TIMESTAMP NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'max_rows' '8192', 'max_delay' '{max_delay}');
CREATE EXTERNAL TABLE stateless STORED AS KAFKA LOCATION '{broker}/{topic}-stateless';
CREATE EXTERNAL TABLE keyed STORED AS KAFKA LOCATION '{broker}/{topic}-keyed'
OPTIONS ('merge_key' 'rider_id');
INSERT INTO stateless SELECT request_id, rider_id, lat, lon, _timestamp AS produced FROM rides;
INSERT INTO keyed SELECT rider_id, count(*) AS n, max(_timestamp) AS produced FROM rides GROUP BY rider_id;
"#
    )
}

fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// A sink that records, per row written, the time since the row's `produced` column.
struct Timed {
    inner: Box<dyn Sink>,
    latencies_us: Arc<Mutex<Vec<i64>>>,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timed")
    }
}

#[async_trait]
impl Sink for Timed {
    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: &[RecordBatch],
    ) -> volley_connectors::Result<()> {
        self.inner.write_epoch(epoch, batches).await?;
        let now = now_ns();
        let mut out = self.latencies_us.lock().unwrap();
        for batch in batches {
            let produced = cast(
                batch.column_by_name("produced").unwrap(),
                &DataType::Timestamp(TimeUnit::Nanosecond, None),
            )
            .unwrap();
            let produced = produced
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap();
            out.extend(produced.iter().flatten().map(|t| (now - t) / 1_000));
        }
        Ok(())
    }

    async fn committed_epoch(&mut self) -> volley_connectors::Result<Option<u64>> {
        self.inner.committed_epoch().await
    }

    async fn close(&mut self) -> volley_connectors::Result<()> {
        self.inner.close().await
    }
}

fn json_lines(count: u64) -> Vec<Vec<u8>> {
    let (_, batches) = events(SURGE, count);
    let mut json = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut json);
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
    }
    json.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Sends `lines` at `rate` per second (in 1 ms steps), round robin over the partitions.
fn produce(broker: &str, topic: &str, lines: &[Vec<u8>], rate: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let started = Instant::now();
    for (i, line) in lines.iter().enumerate() {
        let due = Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
        let elapsed = started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        let partition = i32::try_from(i % PARTITIONS as usize).unwrap();
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(line.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn measure(broker: &str, lines: Vec<Vec<u8>>, rate: u64, max_delay: &str) {
    let seconds = lines.len() as u64 / rate;
    let topic = format!(
        "latency-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let names = [
        topic.clone(),
        format!("{topic}-stateless"),
        format!("{topic}-keyed"),
    ];
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        created.unwrap();
    }
    let pipeline = Pipeline::parse(
        &sql(broker, &topic, max_delay),
        &ConnectorRegistry::builtin(),
    )
    .await
    .unwrap();
    let overrides = JobOverrides {
        workers: Some(2),
        pipeline_id: Some(topic.clone()),
        ..JobOverrides::default()
    };
    let (mut job, _) = build_stream_job(&pipeline, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    let mut samples: BTreeMap<String, Arc<Mutex<Vec<i64>>>> = BTreeMap::new();
    job.wrap_sinks(|name, sink| {
        let latencies_us = Arc::new(Mutex::new(Vec::new()));
        samples.insert(name.to_string(), Arc::clone(&latencies_us));
        Box::new(Timed {
            inner: sink,
            latencies_us,
        })
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(job.run_until(stopped));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b, t) = (broker.to_string(), topic.clone());
    tokio::task::spawn_blocking(move || produce(&b, &t, &lines, rate))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send(true).unwrap();
    let summary = running.await.unwrap().unwrap();
    for (sink, latencies) in samples {
        let mut all = std::mem::take(&mut *latencies.lock().unwrap());
        all.sort_unstable();
        println!(
            "{rate:>6} events/s, max_delay {max_delay:>6}, sink {sink:<9}: {:>7} rows, latency p50 {:>5} ms, p99 {:>5} ms, max {:>5} ms",
            all.len(),
            percentile(&all, 50.0) / 1_000,
            percentile(&all, 99.0) / 1_000,
            all.last().copied().unwrap_or(0) / 1_000,
        );
    }
    assert_eq!(summary.rows_in, rate * seconds, "every event was read");
}

fn main() {
    let Ok(broker) = std::env::var("VOLLEY_KAFKA") else {
        eprintln!(
            "kafka_latency: VOLLEY_KAFKA is not set (a Kafka-protocol broker's host:port); nothing measured"
        );
        return;
    };
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let seconds = 10;
    let runs = [(5_000, "100 ms"), (20_000, "100 ms"), (20_000, "500 ms")];
    let inputs: Vec<_> = runs
        .iter()
        .map(|(rate, _)| json_lines(rate * seconds))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for ((rate, max_delay), lines) in runs.into_iter().zip(inputs) {
        runtime.block_on(measure(&broker, lines, rate, max_delay));
    }
}

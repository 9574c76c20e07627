//! End-to-end latency through Kafka at a fixed rate: a producer sends ride events at R per
//! second; a pipeline reads them (Kafka source, JSON) and writes a stateless projection (and,
//! per run, a keyed upsert) to Kafka sinks. For every row a sink has written (its
//! `write_epoch` returned, every message acknowledged by the broker), latency = that moment
//! minus the message's produce timestamp (its Kafka CreateTime, set by the producer when it
//! sent the event).
//!
//! Runs: `VOLLEY_LATENCY_RUNS` (see `Run::parse`), 10 seconds each; the broker is shared, so
//! start a fresh one for figures you compare (an in-memory broker slows as it fills).
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
use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_sql::Pipeline;

const PARTITIONS: i32 = 3;

/// One measured run: a rate, the source's `max_delay`, the checkpoint interval (`None`: no
/// checkpoints) and whether the sinks write one Kafka transaction per epoch.
struct Run {
    rate: u64,
    max_delay: String,
    checkpoint: Option<CheckpointInterval>,
    exactly_once: bool,
    /// Also a keyed upsert (count and latest time per rider) into a second topic.
    keyed: bool,
}

impl Run {
    /// `rate:max_delay[:checkpoint][:eo][:keyed]`, such as `5000:5ms`, `5000:5ms:1s`,
    /// `5000:5ms:1s:eo`, `5000:100ms:1:keyed`.
    fn parse(text: &str) -> Self {
        let mut parts = text.split(':').map(str::trim);
        let rate = parts.next().unwrap().parse().unwrap();
        let max_delay = parts.next().unwrap().to_string();
        let mut run = Self {
            rate,
            max_delay,
            checkpoint: None,
            exactly_once: false,
            keyed: false,
        };
        for part in parts {
            if part == "eo" {
                run.exactly_once = true;
            } else if part == "keyed" {
                run.keyed = true;
            } else {
                run.checkpoint = Some(CheckpointInterval::parse(part).unwrap());
            }
        }
        run
    }

    fn describe(&self) -> String {
        let checkpoint = match self.checkpoint {
            None => "none".to_string(),
            Some(CheckpointInterval::Epochs(n)) => format!("{n} epochs"),
            Some(CheckpointInterval::Every(d)) => format!("{d:?}"),
            Some(CheckpointInterval::Auto) => "auto".to_string(),
        };
        format!(
            "{:>6} events/s, max_delay {:>6}, checkpoint {checkpoint:>8}, {}{}",
            self.rate,
            self.max_delay,
            if self.exactly_once {
                "exactly-once"
            } else {
                "at-least-once"
            },
            if self.keyed { ", +keyed" } else { "" }
        )
    }
}

fn sql(broker: &str, topic: &str, run: &Run) -> String {
    let eo = if run.exactly_once {
        "'exactly_once' 'true', "
    } else {
        ""
    };
    let max_delay = &run.max_delay;
    let keyed = if run.keyed {
        format!(
            "CREATE EXTERNAL TABLE keyed STORED AS KAFKA LOCATION '{broker}/{topic}-keyed'
OPTIONS ({eo}'merge_key' 'rider_id');
INSERT INTO keyed SELECT rider_id, count(*) AS n, max(_timestamp) AS produced FROM rides GROUP BY rider_id;"
        )
    } else {
        String::new()
    };
    format!(
        r#"
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL, _timestamp TIMESTAMP NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'max_rows' '8192', 'max_delay' '{max_delay}');
CREATE EXTERNAL TABLE stateless STORED AS KAFKA LOCATION '{broker}/{topic}-stateless'
OPTIONS ({eo}'format' 'json');
INSERT INTO stateless SELECT request_id, rider_id, lat, lon, _timestamp AS produced FROM rides;
{keyed}
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
    /// How long each `write_epoch` took, in microseconds.
    writes_us: Arc<Mutex<Vec<i64>>>,
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
        let started = now_ns();
        self.inner.write_epoch(epoch, batches).await?;
        let now = now_ns();
        self.writes_us.lock().unwrap().push((now - started) / 1_000);
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
    // Connected and knowing the topic's leaders before the clock starts: a message's latency
    // is the pipeline's, not the producer's first connection.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
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

async fn measure(broker: &str, lines: Vec<Vec<u8>>, run: &Run) {
    let rate = run.rate;
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
    let pipeline = Pipeline::parse(&sql(broker, &topic, run), &ConnectorRegistry::builtin())
        .await
        .unwrap();
    let checkpoints = tempfile::tempdir().unwrap();
    let overrides = JobOverrides {
        workers: Some(2),
        pipeline_id: Some(topic.clone()),
        checkpoint: run.checkpoint.map(|interval| CheckpointConfig {
            dir: checkpoints.path().to_string_lossy().into_owned(),
            interval,
            keep: 3,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    };
    let (mut job, _) = build_stream_job(&pipeline, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    type Samples = Arc<Mutex<Vec<i64>>>;
    let mut samples: BTreeMap<String, (Samples, Samples)> = BTreeMap::new();
    job.wrap_sinks(|name, sink| {
        let latencies_us = Arc::new(Mutex::new(Vec::new()));
        let writes_us = Arc::new(Mutex::new(Vec::new()));
        samples.insert(
            name.to_string(),
            (Arc::clone(&latencies_us), Arc::clone(&writes_us)),
        );
        Box::new(Timed {
            inner: sink,
            latencies_us,
            writes_us,
        })
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(job.run_until(stopped));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b, t) = (broker.to_string(), topic.clone());
    tokio::task::spawn_blocking(move || produce(&b, &t, &lines, rate))
        .await
        .unwrap();
    // Until the stateless sink has written every event (or 30 s more have passed).
    let count = usize::try_from(rate * seconds).unwrap();
    let stateless = Arc::clone(&samples["stateless"].0);
    let waited = Instant::now();
    while stateless.lock().unwrap().len() < count && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    let summary = running.await.unwrap().unwrap();
    for (sink, (latencies, writes)) in samples {
        let mut all = std::mem::take(&mut *latencies.lock().unwrap());
        all.sort_unstable();
        let mut writes = std::mem::take(&mut *writes.lock().unwrap());
        writes.sort_unstable();
        println!(
            "{}, sink {sink:<9}: {:>7} rows, latency p50 {:>5} ms, p99 {:>5} ms, max {:>5} ms; {} writes, p50 {:.1} ms, p99 {:.1} ms",
            run.describe(),
            all.len(),
            percentile(&all, 50.0) / 1_000,
            percentile(&all, 99.0) / 1_000,
            all.last().copied().unwrap_or(0) / 1_000,
            writes.len(),
            percentile(&writes, 50.0) as f64 / 1_000.0,
            percentile(&writes, 99.0) as f64 / 1_000.0,
        );
    }
    println!(
        "{}: {} epochs, {} checkpoints",
        run.describe(),
        summary.epochs,
        summary.checkpoints
    );
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
    // `VOLLEY_LATENCY_RUNS=5000:5ms,5000:5ms:1s:eo` picks the runs (comma-separated, see
    // `Run::parse`).
    let runs: Vec<Run> = std::env::var("VOLLEY_LATENCY_RUNS")
        .unwrap_or_else(|_| "5000:5ms,5000:5ms:1s,5000:5ms:1s:eo,5000:100ms:1".into())
        .split(',')
        .map(Run::parse)
        .collect();
    let inputs: Vec<_> = runs
        .iter()
        .map(|run| json_lines(run.rate * seconds))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (run, lines) in runs.iter().zip(inputs) {
        runtime.block_on(measure(&broker, lines, run));
    }
}

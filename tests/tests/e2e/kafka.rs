//! Kafka as a source, against the real broker `.ci/run` starts (`VOLLEY_KAFKA`): ride events
//! (some malformed) in a 3-partition topic, read by the `volley` binary into windowed, keyed
//! and stateless sinks, killed at a fail point and restarted; the sinks equal batch over the
//! good events (the window's watermark is the minimum over partitions, which are read at
//! different speeds, so no row is late) and every malformed message is a dead letter with its
//! partition and offset.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use volley_connectors::generator::{GeneratorConnector, generate_rides};
use volley_connectors::kafka::KafkaConnector;
use volley_connectors::{Connector, SourcePoll};
use volley_engine::batch::batch_outputs;
use volley_engine::verify::compare_outputs;

use crate::harness::{assert_exact, pipeline};
use crate::process::{Kill, run};
use crate::readers::{ci_env, conform, python, sink_rows, table_in};

/// The broker `.ci/run` started; `None` (skip) outside CI when there is none.
pub fn broker() -> Option<String> {
    ci_env("VOLLEY_KAFKA", "a Kafka-protocol broker")
}

const GENERATOR: &str = "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '1000000', 'rate' '200', 'seed' '9', 'disorder' '2 seconds', 'riders' '40');";

fn sql(broker: &str, topic: &str) -> String {
    format!(
        r#"
CREATE MODEL fraud LOCATION '{model}';
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL, _partition INT NOT NULL, _offset BIGINT NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'bounded' 'latest', 'max_rows' '256', 'dead_letter' 'out/dead_letters',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE by_window STORED AS PARQUET LOCATION 'out/by_window';
CREATE EXTERNAL TABLE per_rider_kafka STORED AS KAFKA LOCATION '{broker}/{topic}-out'
OPTIONS ('merge_key' 'rider_id', 'exactly_once' 'true');
CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION 'out/raw';
INSERT INTO raw SELECT request_id, rider_id, event_time FROM rides WHERE rider_id % 3 = 0;
INSERT INTO per_rider_kafka
SELECT rider_id, count(*) AS n, max(event_time) AS last_seen, sum(lat) AS lat_sum,
       predict('fraud', count(*) / 10.0, avg(lat) - 40.0, max(lon) - min(lon), 1) AS risk
FROM rides GROUP BY rider_id;
INSERT INTO by_window
SELECT date_bin(INTERVAL '2 seconds', event_time) AS w, count(*) AS n, count(DISTINCT rider_id) AS riders
FROM rides GROUP BY 1;
"#,
        model = crate::predict::fraud_model()
    )
}

/// Creates `topic` with 3 partitions and produces the generated rides as JSON, every 97th
/// message replaced by something that is not a ride; returns the good rides and the number
/// of malformed messages.
pub async fn produce(broker: &str, topic: &str, count: u64) -> (RecordBatch, usize) {
    let (good, malformed, _) = produce_counted(broker, topic, count).await;
    (good, malformed)
}

/// As [`produce`], also returning the bytes sent: every message's key and payload.
pub async fn produce_counted(broker: &str, topic: &str, count: u64) -> (RecordBatch, usize, u64) {
    create_topics(broker, &[topic, &format!("{topic}-out")], 3).await;
    let (rides, json) = ride_json(GENERATOR, count).await;
    let lines: Vec<&[u8]> = json.iter().map(Vec::as_slice).collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut good = Vec::new();
    let mut malformed = 0;
    let mut bytes = 0u64;
    let mut deliveries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let partition = (i % 3) as i32;
        let key = format!("ride-{i}");
        let payload: Vec<u8> = if i % 97 == 5 {
            malformed += 1;
            if malformed % 2 == 0 {
                b"{\"request_id\": \"not a number\"}".to_vec()
            } else {
                b"garbage".to_vec()
            }
        } else {
            good.push(i as u32);
            line.to_vec()
        };
        bytes += (key.len() + payload.len()) as u64;
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    let good =
        arrow::compute::take_record_batch(&rides, &arrow::array::UInt32Array::from(good)).unwrap();
    (good, malformed, bytes)
}

/// Creates `topics` with `partitions` partitions each.
pub async fn create_topics(broker: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let created = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for result in created {
        result.unwrap();
    }
}

/// The rides of the generator table `generator` declares (its first `count`), with one JSON
/// object per ride.
pub async fn ride_json(generator: &str, count: u64) -> (RecordBatch, Vec<Vec<u8>>) {
    let p = pipeline(generator).await;
    let opts = GeneratorConnector::options(&p.tables[0]).unwrap();
    let rides = generate_rides(&opts, 0, count);
    let mut json = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut json);
        writer.write(&rides).unwrap();
        writer.finish().unwrap();
    }
    let lines = json
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    (rides, lines)
}

/// Every message of the sink's topic, through Volley's own Kafka source (per partition in
/// offset order, so the last message per key is its latest value); checks each message's key
/// is its rider as JSON.
async fn read_topic(broker: &str, topic: &str) -> Vec<RecordBatch> {
    let p = pipeline(&format!(
        "CREATE EXTERNAL TABLE out (rider_id BIGINT NOT NULL, n BIGINT NOT NULL, last_seen TIMESTAMP,
           lat_sum DOUBLE, risk FLOAT, _key VARCHAR NOT NULL)
         STORED AS KAFKA LOCATION '{broker}/{topic}' OPTIONS ('bounded' 'latest')"
    ))
    .await;
    let table = &p.tables[0];
    let schema = Arc::clone(table.declared_schema.as_ref().unwrap());
    let mut source = KafkaConnector.open_source(table, schema).await.unwrap();
    let mut rows = Vec::new();
    loop {
        let polled = source
            .poll_batch(
                10_000,
                tokio::time::Instant::now() + Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert!(
            source.take_rejected().is_empty(),
            "the sink wrote only valid JSON"
        );
        match polled {
            SourcePoll::Partitions(parts) => rows.extend(parts.into_iter().map(|(_, b)| b)),
            SourcePoll::Data(b) => rows.push(b),
            SourcePoll::Pending => {}
            SourcePoll::Exhausted => break,
        }
    }
    for batch in &rows {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        let keys =
            arrow::compute::cast(batch.column(5), &arrow::datatypes::DataType::Utf8).unwrap();
        let keys = keys
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        for i in 0..batch.num_rows() {
            assert_eq!(keys.value(i), format!("{{\"rider_id\":{}}}", ids.value(i)));
        }
    }
    assert!(!rows.is_empty());
    rows
}

/// Every message of `topic` as a `read_committed` consumer (Python confluent-kafka) sees it:
/// `{partition, offset, key, value, headers}` objects, per partition in offset order.
pub fn read_committed(python: &Path, broker: &str, topic: &str) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/read_kafka.py");
    let out = Command::new(python)
        .arg(script)
        .arg(broker)
        .arg(topic)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A topic name no other run uses (the broker outlives one test run in a session).
pub fn unique_topic(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}

/// The (partition, offset) of every undecodable-record letter under `dir/out/dead_letters`,
/// each checked to have a reason and an error and to appear once.
pub fn undecodable_letters(dir: &Path) -> BTreeSet<(String, u64)> {
    let mut letters = BTreeSet::new();
    for file in std::fs::read_dir(dir.join("out/dead_letters")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for line in text.lines() {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(letter["reason"], "undecodable record");
            let row = &letter["row"];
            assert!(!row["error"].as_str().unwrap().is_empty());
            let key = (
                row["partition"].as_str().unwrap().to_string(),
                row["offset"].as_u64().unwrap(),
            );
            assert!(
                letters.insert(key.clone()),
                "{key:?} is a dead letter twice"
            );
        }
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_replays_exactly_and_dead_letters_malformed_messages() {
    let Some(broker) = broker() else { return };
    let topic = unique_topic("rides");
    let (good, malformed) = produce(&broker, &topic, 3000).await;
    assert!(malformed >= 20);
    let dir = tempfile::tempdir().unwrap();
    let text = sql(&broker, &topic);
    std::fs::write(dir.path().join("pipeline.sql"), &text).unwrap();

    // Killed right after its sinks wrote epoch 4, before that checkpoint: the restart must
    // re-read epoch 4's logged offsets exactly.
    let out = run(
        dir.path(),
        Some(&Kill::At("after_sink_commit_before_checkpoint:4".into())),
    );
    assert!(
        out.status.code().is_none(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(dir.path(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run summary (stdout).
    let stderr = String::from_utf8_lossy(&out.stdout);
    // Epoch 4 was committed to Kafka (its transaction) before the kill: re-computed, not re-sent.
    assert!(
        stderr.contains("recovery: 1 logged epochs re-read"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("re-read, 0 rows not re-written"),
        "{stderr}"
    );
    // The last checkpoint's offsets were committed to the table's group, for monitoring.
    let watcher: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("group.id", "volley-rides")
        .create()
        .unwrap();
    let mut wanted = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        wanted.add_partition(&topic, p);
    }
    let committed =
        rdkafka::consumer::Consumer::committed_offsets(&watcher, wanted, Duration::from_secs(10))
            .unwrap();
    let offsets: Vec<rdkafka::Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(offsets, vec![rdkafka::Offset::Offset(1000); 3]);

    let p = pipeline(&text).await;
    // Batch over the good rides: the metadata columns are not used by the queries.
    let mut with_meta = good.columns().to_vec();
    with_meta.push(Arc::new(arrow::array::Int32Array::from(vec![
        0;
        good.num_rows(
        )
    ])));
    with_meta.push(Arc::new(arrow::array::Int64Array::from(vec![
        0;
        good.num_rows(
        )
    ])));
    let declared = Arc::clone(p.tables[0].declared_schema.as_ref().unwrap());
    let input = BTreeMap::from([(
        "rides".to_string(),
        (
            Arc::clone(&declared),
            vec![RecordBatch::try_new(declared, with_meta).unwrap()],
        ),
    )]);
    let batch = batch_outputs(&p, &input).await.unwrap();
    let plans = crate::harness::plans(&p).await;
    let mut stream = BTreeMap::new();
    for plan in &plans {
        if plan.target == "per_rider_kafka" {
            let rows = read_topic(&broker, &format!("{topic}-out")).await;
            stream.insert(
                plan.target.clone(),
                vec![(1, conform(&plan.output_schema, &rows))],
            );
            continue;
        }
        let table = table_in(&p, &plan.target, dir.path());
        stream.insert(
            plan.target.clone(),
            vec![(1, sink_rows(&table, &plan.output_schema).await)],
        );
    }
    assert_exact(
        &compare_outputs(&p, &plans, &batch, &stream, 5).unwrap(),
        "Kafka source after a kill",
    );

    // A read_committed consumer (Python confluent-kafka): no epoch was sent twice for any key,
    // and the last value per key is the batch result.
    if let Some(python) = python() {
        let model_sha = crate::predict::reference()["sha256"]["fraud"]
            .as_str()
            .unwrap()
            .to_string();
        let mut epochs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for m in read_committed(&python, &broker, &format!("{topic}-out")) {
            let key = m["key"].as_str().unwrap().to_string();
            assert_eq!(m["headers"]["volley.pipeline"], "pipeline");
            assert_eq!(
                m["headers"]["volley.model.fraud"].as_str(),
                Some(model_sha.as_str()),
                "the model's SHA-256 rides with every message"
            );
            let epoch: u64 = m["headers"]["volley.epoch"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            epochs.entry(key.clone()).or_default().push(epoch);
            last.insert(key, m["value"].clone());
        }
        for (key, e) in &epochs {
            assert!(e.windows(2).all(|w| w[0] < w[1]), "{key}: epochs {e:?}");
        }
        let expected = &batch["per_rider_kafka"];
        let rows: usize = expected.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(last.len(), rows, "one key per rider");
        for b in expected {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            let n = b
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            for i in 0..b.num_rows() {
                let value = &last[&format!("{{\"rider_id\":{}}}", ids.value(i))];
                assert_eq!(value["n"].as_i64(), Some(n.value(i)), "{value}");
            }
        }
    }

    // Every malformed message is a dead letter, once, with its partition and offset.
    assert_eq!(undecodable_letters(dir.path()).len(), malformed);
}

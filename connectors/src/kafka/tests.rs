#![allow(clippy::unwrap_used)]
//! Decoding without a broker, and the source against rdkafka's in-process mock cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::*;
use crate::traits::{Position, SourcePoll};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_key", DataType::Utf8, true),
        Field::new(
            "_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
    ]))
}

fn message(partition: i32, offset: i64, payload: Option<&str>) -> Message {
    Message {
        partition,
        offset,
        key: Some(format!("k{offset}").into_bytes()),
        payload: payload.map(|p| p.as_bytes().to_vec()),
        timestamp_ms: Some(1_000 + offset),
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

#[test]
fn json_values_and_metadata_columns_with_bad_messages_rejected() {
    let layout = Layout::new("rides", schema(), KafkaFormat::Json, None).unwrap();
    let messages = vec![
        message(0, 10, Some(r#"{"id": 1, "name": "a"}"#)),
        message(0, 11, Some("{oops")),
        message(1, 5, Some(r#"{"id": "two"}"#)),
        message(1, 6, None),
        message(2, 0, Some(r#"{"id": 3}"#)),
    ];
    let (batch, rejected) = layout.decode(&messages).unwrap();
    assert_eq!(column::<Int64Array>(&batch, "id").values(), &[1, 3]);
    assert_eq!(column::<Int32Array>(&batch, "_partition").values(), &[0, 2]);
    assert_eq!(column::<Int64Array>(&batch, "_offset").values(), &[10, 0]);
    let keys = column::<StringArray>(&batch, "_key");
    assert_eq!((keys.value(0), keys.value(1)), ("k10", "k0"));
    let ts = batch.column_by_name("_timestamp").unwrap();
    assert_eq!(
        ts.data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, None)
    );
    let bad: Vec<(String, u64)> = rejected
        .iter()
        .map(|r| (r.partition.clone(), r.offset))
        .collect();
    assert_eq!(
        bad,
        vec![("0".into(), 11), ("1".into(), 5), ("1".into(), 6)]
    );
    assert!(rejected.iter().all(|r| !r.error.is_empty()));
    assert_eq!(rejected[0].payload, b"{oops");
}

#[test]
fn csv_values_in_column_order_with_metadata_and_bad_records_rejected() {
    let layout = Layout::new(
        "rides",
        schema(),
        KafkaFormat::Csv { delimiter: b';' },
        None,
    )
    .unwrap();
    let messages = vec![
        message(0, 1, Some("1;a")),
        message(0, 2, Some("2;b;extra")),
        message(1, 7, Some("three;c")),
        message(1, 8, Some("4;\"d;quoted\"\n")),
        message(2, 0, None),
    ];
    let (batch, rejected) = layout.decode(&messages).unwrap();
    assert_eq!(column::<Int64Array>(&batch, "id").values(), &[1, 4]);
    assert_eq!(column::<StringArray>(&batch, "name").value(1), "d;quoted");
    assert_eq!(column::<Int32Array>(&batch, "_partition").values(), &[0, 1]);
    assert_eq!(column::<Int64Array>(&batch, "_offset").values(), &[1, 8]);
    let bad: Vec<u64> = rejected.iter().map(|r| r.offset).collect();
    assert_eq!(bad, vec![2, 7, 0]);
}

#[test]
fn raw_values_and_layout_errors() {
    let raw = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Utf8, false),
        Field::new("_offset", DataType::Int64, false),
    ]));
    let layout = Layout::new("lines", raw, KafkaFormat::Raw, None).unwrap();
    let mut not_utf8 = message(0, 2, None);
    not_utf8.payload = Some(vec![0xff, 0xfe]);
    let (batch, rejected) = layout
        .decode(&[message(0, 1, Some("hello")), not_utf8, message(0, 3, None)])
        .unwrap();
    assert_eq!(column::<StringArray>(&batch, "value").value(0), "hello");
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(
        rejected.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![2, 3]
    );

    let extra = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
    ]));
    let err = Layout::new("lines", extra, KafkaFormat::Raw, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lines") && err.contains("'id'"), "{err}");
    let bad_type = Arc::new(Schema::new(vec![Field::new(
        "_partition",
        DataType::Struct(vec![Field::new("x", DataType::Int32, true)].into()),
        true,
    )]));
    let err = Layout::new("t", bad_type, KafkaFormat::Json, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("_partition"), "{err}");
}

fn produce(bootstrap: &str, topic: &str, rows: &[(i32, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (i, (partition, payload)) in rows.iter().enumerate() {
        let key = format!("k{i}");
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(*partition)
                    .key(&key)
                    .payload(payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn options(bootstrap: &str, topic: &str) -> KafkaOptions {
    KafkaOptions {
        brokers: bootstrap.to_string(),
        topic: topic.to_string(),
        format: KafkaFormat::Json,
        start: StartAt::Earliest,
        bounded: true,
        partitions: None,
        group: "volley-test".into(),
        shared: false,
        partitioned_by: None,
        session_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        fetch_wait: Duration::from_millis(100),
        exactly_once: false,
        timestamp_unit: None,
    }
}

/// The per-partition batches of a poll (a Kafka source never returns one-stream data).
fn partitions(polled: SourcePoll) -> Vec<(String, RecordBatch)> {
    match polled {
        SourcePoll::Partitions(parts) => parts,
        SourcePoll::Data(_) => panic!("a Kafka source returns batches per partition"),
        SourcePoll::Pending | SourcePoll::Exhausted => Vec::new(),
    }
}

async fn read_all(source: &mut KafkaSource) -> (Vec<i64>, usize) {
    let mut ids = Vec::new();
    let mut rejected = 0;
    loop {
        let polled = source
            .poll_batch(1000, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        rejected += source.take_rejected().len();
        if let SourcePoll::Exhausted = polled {
            return (ids, rejected);
        }
        for (_, batch) in partitions(polled) {
            ids.extend(column::<Int64Array>(&batch, "id").values().iter().copied());
        }
    }
}

#[tokio::test]
async fn mock_cluster_read_to_end_then_seek_and_bounded_replay() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("rides", 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let rows: Vec<(i32, String)> = (0..90)
        .map(|i| {
            let payload = if i % 30 == 7 {
                "not json".to_string()
            } else {
                format!(r#"{{"id": {i}, "name": "n{i}"}}"#)
            };
            (i % 3, payload)
        })
        .collect();
    produce(&bootstrap, "rides", &rows);

    let mut source = KafkaSource::open("rides", options(&bootstrap, "rides"), schema())
        .await
        .unwrap();
    let (mut ids, rejected) = read_all(&mut source).await;
    ids.sort_unstable();
    let expected: Vec<i64> = (0..90).filter(|i| i % 30 != 7).collect();
    assert_eq!(ids, expected);
    assert_eq!(rejected, 3);
    let end = source.position();
    assert_eq!(
        end,
        Position(BTreeMap::from([
            ("0".into(), 30),
            ("1".into(), 30),
            ("2".into(), 30)
        ]))
    );

    // Replay a logged range: from (10, 0, 20) to (20, 5, 20) is exactly 10 + 5 messages.
    let start = Position(BTreeMap::from([
        ("0".into(), 10),
        ("1".into(), 0),
        ("2".into(), 20),
    ]));
    let until = Position(BTreeMap::from([
        ("0".into(), 20),
        ("1".into(), 5),
        ("2".into(), 20),
    ]));
    source.seek(&start).await.unwrap();
    let mut replayed = Vec::new();
    let mut replay_rejected = Vec::new();
    for _ in 0..20 {
        if source.position() == until {
            break;
        }
        let polled = source
            .poll_until(&until, 1000, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        replay_rejected.extend(source.take_rejected());
        for (partition, batch) in partitions(polled) {
            let tags = column::<Int32Array>(&batch, "_partition").values();
            assert!(tags.iter().all(|p| p.to_string() == partition));
            replayed.extend(tags.iter().copied());
        }
    }
    assert_eq!(source.position(), until);
    // Rows i go to partition i % 3 at offset i / 3; the bad ones (7, 37, 67) are partition 1's
    // offsets 2, 12 and 22. Partition 0's offsets 10..20 are 10 good rows; partition 1's 0..5
    // are 4 good rows and offset 2.
    let count = |p: i32| replayed.iter().filter(|x| **x == p).count();
    assert_eq!((count(0), count(1), count(2)), (10, 4, 0));
    assert_eq!(
        replay_rejected
            .iter()
            .map(|r| (r.partition.as_str(), r.offset))
            .collect::<Vec<_>>(),
        vec![("1", 2)]
    );

    // After the bounded read, normal reading resumes from the position, not the consumer's.
    let (ids, _) = read_all(&mut source).await;
    assert_eq!(ids.len(), (10 + 25 + 10) - 2, "{ids:?}");
}

#[tokio::test]
async fn a_missing_partition_is_a_config_error() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", 2, 1).unwrap();
    let mut opts = options(&cluster.bootstrap_servers(), "t");
    opts.partitions = Some(vec![0, 5]);
    let err = KafkaSource::open("t_table", opts, schema())
        .await
        .unwrap_err();
    assert!(matches!(err, crate::ConnectorError::Config(_)), "{err}");
    assert!(err.to_string().contains('5'), "{err}");
}

#[tokio::test]
async fn checkpointed_offsets_are_committed_to_the_group_for_monitoring() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("timed", 2, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..40i64 {
        let payload = format!(r#"{{"id": {i}}}"#);
        producer
            .send(
                BaseRecord::<(), String>::to("timed")
                    .partition(i32::try_from(i % 2).unwrap())
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut opts = options(&bootstrap, "timed");
    opts.group = "monitor".into();
    let mut source = KafkaSource::open("timed", opts, schema()).await.unwrap();
    let (mut ids, _) = read_all(&mut source).await;
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<i64>>());

    // A checkpoint's positions are committed to the group (monitoring only).
    let monitor = source.monitor().unwrap();
    monitor.checkpointed(&source.position());
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "monitor")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("timed", 0);
    wanted.add_partition("timed", 1);
    let started = std::time::Instant::now();
    let committed = loop {
        let found = watcher
            .committed_offsets(wanted.clone(), Duration::from_secs(5))
            .unwrap();
        let offsets: Vec<_> = found.elements().iter().map(|e| e.offset()).collect();
        if offsets.iter().all(|o| matches!(o, Offset::Offset(_)))
            || started.elapsed() > Duration::from_secs(10)
        {
            break offsets;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(committed, vec![Offset::Offset(20), Offset::Offset(20)]);
}

//! Kafka source decoding: JSON ride messages into Arrow batches (the work a poll does after
//! the messages arrive), clean and with sparse (1 in 10,000) and dense (1%) malformed messages
//! (the isolating slow path).
//!
//! Run: `cargo bench -p volley-benches --bench kafka_decode`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::json::LineDelimitedWriter;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use volley_benches::{SURGE, events};
use volley_connectors::kafka::{KafkaFormat, Layout, Message};

/// The rides as one payload per event: JSON objects, or CSV records (no header).
fn encoded(count: u64, csv: bool) -> Vec<u8> {
    let (_, batches) = events(SURGE, count);
    let mut out = Vec::new();
    if csv {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(false)
            .build(&mut out);
        for b in &batches {
            writer.write(b).unwrap();
        }
    } else {
        let mut writer = LineDelimitedWriter::new(&mut out);
        for b in &batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
    }
    out
}

fn messages(count: u64, malformed_every: Option<usize>, csv: bool) -> (Vec<Message>, u64) {
    let json = encoded(count, csv);
    let mut bytes = 0;
    let messages = json
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            let payload = match malformed_every {
                Some(n) if i % n == 0 && csv => b"oops,1,2.0,3.0,2026-01-01T00:00:00".to_vec(),
                Some(n) if i % n == 0 => b"{\"request_id\": \"oops\"}".to_vec(),
                _ => line.to_vec(),
            };
            bytes += payload.len() as u64;
            Message {
                partition: (i % 3) as i32,
                offset: (i / 3) as i64,
                key: None,
                payload: Some(payload),
                timestamp_ms: Some(1_767_225_600_000),
            }
        })
        .collect();
    (messages, bytes)
}

fn decode(c: &mut Criterion) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Int64, false),
        Field::new("rider_id", DataType::Int64, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
    ]));
    let layout = Layout::new("rides", Arc::clone(&schema), KafkaFormat::Json, None).unwrap();
    let count = 65_536;
    let mut group = c.benchmark_group("kafka_decode");
    {
        let csv = Layout::new("rides", schema, KafkaFormat::Csv { delimiter: b',' }, None).unwrap();
        let (messages, bytes) = messages(count, None, true);
        let (decoded, rejected) = csv.decode(&messages).unwrap();
        assert_eq!(
            decoded.num_rows() as u64,
            count,
            "every CSV ride decodes: {rejected:?}"
        );
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(
            BenchmarkId::new("csv_rides_events", "clean"),
            &messages,
            |b, m| b.iter(|| csv.decode(m).unwrap()),
        );
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(
            BenchmarkId::new("csv_rides_bytes", "clean"),
            &messages,
            |b, m| b.iter(|| csv.decode(m).unwrap()),
        );
    }
    for (label, malformed) in [
        ("clean", None),
        ("1_in_10000_malformed", Some(10_000)),
        ("1pct_malformed", Some(100)),
    ] {
        let (messages, bytes) = messages(count, malformed, false);
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(
            BenchmarkId::new("json_rides_events", label),
            &messages,
            |b, m| b.iter(|| layout.decode(m).unwrap()),
        );
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(
            BenchmarkId::new("json_rides_bytes", label),
            &messages,
            |b, m| b.iter(|| layout.decode(m).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);

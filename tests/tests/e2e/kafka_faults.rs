//! A broker that goes down for 10 seconds mid-run (rdkafka's mock cluster): the pipeline keeps
//! running, retries, and once the broker is back every event is counted exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use volley_connectors::{ConnectorRegistry, Sink};
use volley_engine::batch::batch_outputs;
use volley_engine::memory::{CollectSink, Collected};
use volley_engine::setup::{JobOverrides, build_stream_job};
use volley_engine::verify::compare_outputs;

use crate::harness::pipeline;

fn produce(bootstrap: &str, from: i64, to: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for i in from..to {
        let payload = format!(r#"{{"id": {i}, "user_id": {}}}"#, i % 7);
        producer
            .send(
                BaseRecord::<(), str>::to("events")
                    .partition((i % 3) as i32)
                    .payload(&payload),
            )
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn upserts(collected: &Collected) -> BTreeMap<String, Vec<(u64, Vec<RecordBatch>)>> {
    BTreeMap::from([("per_user".to_string(), collected.lock().unwrap().clone())])
}

#[test]
fn broker_down_for_ten_seconds_mid_run_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    produce(&bootstrap, 0, 3000);

    let sql = format!(
        "CREATE EXTERNAL TABLE events (id BIGINT NOT NULL, user_id BIGINT NOT NULL)
           STORED AS KAFKA LOCATION '{bootstrap}/events' OPTIONS ('max_delay' '100 ms');
         CREATE EXTERNAL TABLE per_user STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'user_id');
         INSERT INTO per_user SELECT user_id, count(*) AS n, sum(id) AS s FROM events GROUP BY user_id;"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = rt.block_on(pipeline(&sql));
    let (sink, collected) = CollectSink::new();
    let overrides = JobOverrides {
        sinks: HashMap::from([("per_user".to_string(), Box::new(sink) as Box<dyn Sink>)]),
        ..JobOverrides::default()
    };
    let (job, plans) = rt
        .block_on(build_stream_job(
            &p,
            &ConnectorRegistry::builtin(),
            overrides,
        ))
        .unwrap();
    let running = rt.spawn(job.run());

    // The expected result once every event is in: batch over all 6000 events.
    let schema = Arc::clone(p.tables[0].declared_schema.as_ref().unwrap());
    let all = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(0..6000)),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                (0..6000).map(|i| i % 7),
            )),
        ],
    )
    .unwrap();
    let input = BTreeMap::from([("events".to_string(), (schema, vec![all]))]);
    let batch = rt.block_on(batch_outputs(&p, &input)).unwrap();
    let matches = |collected: &Collected| {
        compare_outputs(&p, &plans, &batch, &upserts(collected), 3)
            .unwrap()
            .is_exact()
    };

    // First half read, then the broker goes away for 10 seconds.
    let wait_for = |what: &dyn Fn() -> bool, limit: Duration| {
        let started = Instant::now();
        while !what() {
            assert!(started.elapsed() < limit, "timed out");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(
        &|| !collected.lock().unwrap().is_empty(),
        Duration::from_secs(30),
    );
    cluster.broker_down(-1).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        !running.is_finished(),
        "the pipeline kept running while the broker was down"
    );
    cluster.broker_up(-1).unwrap();

    // The second half arrives after the outage; the pipeline catches up exactly.
    produce(&bootstrap, 3000, 6000);
    wait_for(&|| matches(&collected), Duration::from_secs(60));
    assert!(!running.is_finished());
    running.abort();
    let report = compare_outputs(&p, &plans, &batch, &upserts(&collected), 3).unwrap();
    assert!(report.is_exact(), "{report:?}");
}

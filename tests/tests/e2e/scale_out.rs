//! Group mode against the real broker: two `volley run` processes of one pipeline join the
//! source's consumer group and split a 4-partition topic keyed by rider; one is SIGKILLed
//! and the survivor takes its partitions over from the shared checkpoints. Windowed and keyed
//! Delta sinks, and a stateless Parquet sink, written by both processes, then equal batch, and
//! every malformed message is a dead letter in the dead-letter topic (once per key).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use volley_engine::batch::batch_outputs;
use volley_engine::verify::{VerifyReport, compare_outputs};
use volley_sql::Pipeline;
use volley_sql::stream::QueryPlan;

use crate::harness::{assert_exact, pipeline};
use crate::kafka::{broker, create_topics, read_committed, ride_json, unique_topic};
use crate::process::volley_command;
use crate::readers::{conform, delta_stored, independent_read, python, sink_rows, table_in};

const PARTITIONS: i32 = 4;

const GENERATOR: &str = "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '1000000', 'rate' '400', 'seed' '11', 'disorder' '2 seconds', 'riders' '64');";

fn sql(broker: &str, topic: &str, group: &str) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'group' '{group}', 'partitioned_by' 'rider_id', 'session_timeout' '6s',
         'max_rows' '300', 'max_delay' '100 ms', 'dead_letter' 'kafka://{broker}/{topic}-dead',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE per_window STORED AS DELTA LOCATION 'out/per_window';
CREATE EXTERNAL TABLE per_rider STORED AS DELTA LOCATION 'out/per_rider' OPTIONS ('merge_key' 'rider_id');
CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION 'out/raw';
INSERT INTO per_window
SELECT rider_id, date_bin(INTERVAL '5 seconds', event_time) AS w, count(*) AS n, sum(lat) AS lat_sum
FROM rides WHERE rider_id >= 0 GROUP BY 1, 2;
INSERT INTO per_rider
SELECT rider_id, count(*) AS n, max(event_time) AS last_seen FROM rides WHERE rider_id >= 0 GROUP BY rider_id;
INSERT INTO raw SELECT request_id, rider_id, event_time FROM rides WHERE rider_id >= 0 AND rider_id % 3 = 0;
"#
    )
}

/// Sends `(partition, key, payload)` messages and waits for every delivery.
async fn send(broker: &str, topic: &str, messages: &[(i32, String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for (partition, key, payload) in messages {
        let record = FutureRecord::to(topic)
            .partition(*partition)
            .key(key)
            .payload(payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
}

/// A `volley run` of the pipeline in `dir`, its stderr in `dir/<name>.log`.
fn spawn(dir: &Path, name: &str) -> (Child, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let child = volley_command()
        .args([
            "run",
            "pipeline.sql",
            "--checkpoint-dir",
            "shared-checkpoints",
        ])
        .current_dir(dir)
        .env_remove("VOLLEY_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// The partitions each `assigned partitions [..]` line of a log names, in order.
fn assignments(log: &Path) -> Vec<BTreeSet<i32>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split("assigned partitions [").nth(1))
        .map(|rest| {
            rest.split(']')
                .next()
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .collect()
}

fn alive(child: &mut Child, log: &Path) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "volley exited ({status}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Waits until `ready` holds, checking that every child is still running.
fn wait_for(
    what: &str,
    limit: Duration,
    children: &mut [(&mut Child, &Path)],
    mut ready: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !ready() {
        for (child, log) in children.iter_mut() {
            alive(child, log);
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

async fn compare(
    p: &Pipeline,
    plans: &[QueryPlan],
    dir: &Path,
    batch: &BTreeMap<String, Vec<RecordBatch>>,
) -> VerifyReport {
    let mut stream = BTreeMap::new();
    for plan in plans {
        let table = table_in(p, &plan.target, dir);
        let schema = if table.kind == "DELTA" {
            delta_stored(&plan.output_schema)
        } else {
            Arc::clone(&plan.output_schema)
        };
        let rows = if dir.join(&p.table(&plan.target).unwrap().location).exists() {
            sink_rows(&table, &schema).await
        } else {
            Vec::new()
        };
        stream.insert(plan.target.clone(), vec![(1, rows)]);
    }
    compare_outputs(p, plans, batch, &stream, 5).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_split_the_partitions_and_the_survivor_takes_over() {
    let Some(broker) = broker() else { return };
    let topic = unique_topic("scale");
    create_topics(&broker, &[&topic], PARTITIONS).await;

    // Rides keyed by rider (a rider's rides all land in one partition), every 89th message
    // malformed; then, per partition, a sentinel far in the future closes every window
    // (rider -1, filtered out by every INSERT).
    let count = 8_000;
    let (all, lines) = ride_json(GENERATOR, count).await;
    let riders = all
        .column_by_name("rider_id")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .clone();
    let times = all
        .column_by_name("event_time")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap()
        .clone();
    let mut messages = Vec::new();
    let mut good = Vec::new();
    let mut malformed = 0;
    for (i, line) in lines.iter().enumerate() {
        let rider = riders.value(i);
        let partition = i32::try_from(rider.rem_euclid(i64::from(PARTITIONS))).unwrap();
        let payload = if i % 89 == 7 {
            malformed += 1;
            b"{\"rider_id\": \"nobody\"}".to_vec()
        } else {
            good.push(u32::try_from(i).unwrap());
            line.clone()
        };
        messages.push((partition, rider.to_string(), payload));
    }
    let good =
        arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(good)).unwrap();
    let last = times.iter().flatten().max().unwrap();
    let sentinel_time = arrow::compute::cast(
        &TimestampNanosecondArray::from(vec![last + 3_600_000_000_000]),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let sentinel_time = sentinel_time
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    let sentinels: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let json = format!(
                r#"{{"request_id": -1, "rider_id": -1, "lat": 0.0, "lon": 0.0, "event_time": "{sentinel_time}"}}"#
            );
            (p, "-1".to_string(), json.into_bytes())
        })
        .collect();
    let half = messages.len() / 2;
    send(&broker, &topic, &messages[..half]).await;

    let dir = tempfile::tempdir().unwrap();
    let text = sql(&broker, &topic, &format!("{topic}-group"));
    std::fs::write(dir.path().join("pipeline.sql"), &text).unwrap();
    let (mut a, a_log) = spawn(dir.path(), "a");
    let (mut b, b_log) = spawn(dir.path(), "b");

    // The two processes split the partitions.
    let everything: BTreeSet<i32> = (0..PARTITIONS).collect();
    let (mut a_owns, mut b_owns) = (BTreeSet::new(), BTreeSet::new());
    wait_for(
        "the group to split the partitions",
        Duration::from_secs(60),
        &mut [(&mut a, &a_log), (&mut b, &b_log)],
        || {
            a_owns = assignments(&a_log).last().cloned().unwrap_or_default();
            b_owns = assignments(&b_log).last().cloned().unwrap_or_default();
            !a_owns.is_empty()
                && !b_owns.is_empty()
                && a_owns.is_disjoint(&b_owns)
                && a_owns.union(&b_owns).copied().collect::<BTreeSet<_>>() == everything
        },
    );
    // Both have checkpointed some of their partitions' progress.
    let checkpointed = |p: &i32| {
        dir.path()
            .join(format!("shared-checkpoints/p{p}/_latest"))
            .exists()
    };
    wait_for(
        "every partition's first checkpoint",
        Duration::from_secs(60),
        &mut [(&mut a, &a_log), (&mut b, &b_log)],
        || everything.iter().all(checkpointed),
    );

    // A dies mid-run; the rest of the input arrives while B takes A's partitions over.
    a.kill().unwrap();
    a.wait().unwrap();
    send(&broker, &topic, &messages[half..]).await;
    send(&broker, &topic, &sentinels).await;
    wait_for(
        "the survivor to own every partition",
        Duration::from_secs(60),
        &mut [(&mut b, &b_log)],
        || assignments(&b_log).last() == Some(&everything),
    );

    // Batch over the good events; the sinks both processes wrote converge to it.
    let p = pipeline(&text).await;
    let declared = Arc::clone(p.tables[0].declared_schema.as_ref().unwrap());
    let input = BTreeMap::from([("rides".to_string(), (declared, vec![good.clone()]))]);
    let mut batch = batch_outputs(&p, &input).await.unwrap();
    let plans = crate::harness::plans(&p).await;
    for plan in &plans {
        if p.table(&plan.target).unwrap().kind == "DELTA" {
            let stored = delta_stored(&plan.output_schema);
            let rows = batch.get_mut(&plan.target).unwrap();
            *rows = conform(&stored, rows);
        }
    }
    let started = Instant::now();
    let mut report = compare(&p, &plans, dir.path(), &batch).await;
    while !report.is_exact() && started.elapsed() < Duration::from_secs(90) {
        alive(&mut b, &b_log);
        tokio::time::sleep(Duration::from_secs(1)).await;
        report = compare(&p, &plans, dir.path(), &batch).await;
    }
    // B serves the union of its partition jobs' live tables over Flight SQL: every rider,
    // those of A's partitions rebuilt from their checkpoints, counted as batch counts them.
    if let Some(python) = crate::readers::python() {
        let log = std::fs::read_to_string(&b_log).unwrap();
        let addr = log
            .lines()
            .find_map(|l| l.strip_prefix("volley: Flight SQL on grpc://"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("B did not announce Flight SQL: {log}"))
            .to_string();
        let per_rider = &batch["per_rider"];
        let riders: usize = per_rider.iter().map(|b| b.num_rows()).sum();
        let rides: i64 = per_rider
            .iter()
            .map(|b| {
                let n = b.column_by_name("n").unwrap();
                let n = arrow::compute::cast(n, &arrow::datatypes::DataType::Int64).unwrap();
                arrow::compute::sum(n.as_any().downcast_ref::<Int64Array>().unwrap()).unwrap_or(0)
            })
            .sum();
        let script = r#"
import sys
import pyarrow as pa
from flightsql import FlightSQLClient
host, port = sys.argv[1].rsplit(":", 1)
client = FlightSQLClient(host=host, port=int(port), insecure=True)
info = client.execute("SELECT count(*) AS riders, CAST(sum(n) AS BIGINT) AS rides FROM per_rider")
row = pa.concat_tables(client.do_get(e.ticket).read_all() for e in info.endpoints).to_pylist()[0]
print(row["riders"], row["rides"])
"#;
        let out = Command::new(python)
            .args(["-c", script, &addr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let served = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            served,
            format!("{riders} {rides}"),
            "riders and rides served by B"
        );
    }
    // SIGTERM: B stops its partitions' jobs, leaves the group and exits 0.
    let term = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = b.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            b.kill().unwrap();
            panic!("volley did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let b_text = std::fs::read_to_string(&b_log).unwrap();
    assert!(status.success(), "{status}: {b_text}");
    assert!(b_text.contains("stopping on a signal"), "{b_text}");
    assert_exact(&report, "two processes, one killed: every sink");

    // A and B each ran some partitions; B ran A's after A died.
    assert!(a_owns.len() < everything.len() && b_owns.len() < everything.len());
    let b_text = std::fs::read_to_string(&b_log).unwrap();
    assert!(
        b_text.contains("revoked"),
        "B stopped its jobs at the rebalance: {b_text}"
    );

    // Every malformed message is a dead letter in the topic, whichever process read it: a
    // replayed epoch repeats a letter under the same key, never under another.
    if let Some(python) = python() {
        let mut by_key: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for message in read_committed(&python, &broker, &format!("{topic}-dead")) {
            let row = &message["value"]["row"];
            assert_eq!(message["value"]["reason"], "undecodable record");
            let letter = (
                row["partition"].as_str().unwrap().to_string(),
                row["offset"].as_u64().unwrap(),
            );
            let key = message["key"].as_str().unwrap().to_string();
            if let Some(before) = by_key.insert(key.clone(), letter.clone()) {
                assert_eq!(before, letter, "key {key} names two letters");
            }
        }
        let letters: BTreeSet<(String, u64)> = by_key.values().cloned().collect();
        assert_eq!(letters.len(), by_key.len(), "a letter under two keys");
        assert_eq!(letters.len(), malformed);
    }

    // An independent reader agrees on the keyed table both processes merged into.
    if let Some(python) = python() {
        let plan = plans.iter().find(|q| q.target == "per_rider").unwrap();
        let stored = delta_stored(&plan.output_schema);
        let read = independent_read(
            &python,
            &dir.path().join("out/per_rider"),
            "pipeline:per_rider:p0",
            &stored,
        );
        let mut stream = BTreeMap::new();
        stream.insert("per_rider".to_string(), vec![(1, read.deltalake)]);
        for plan in &plans {
            stream
                .entry(plan.target.clone())
                .or_insert_with(|| vec![(1, batch[&plan.target].clone())]);
        }
        assert_exact(
            &compare_outputs(&p, &plans, &batch, &stream, 5).unwrap(),
            "per_rider read by Python deltalake",
        );
        let partitions: BTreeSet<&str> = read
            .txn_actions
            .iter()
            .map(|(app, _)| app.as_str())
            .collect();
        assert_eq!(
            partitions.len(),
            PARTITIONS as usize,
            "one txn app id per partition: {partitions:?}"
        );
    }
}

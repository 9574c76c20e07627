//! Eight clients query two live tables of a running pipeline for 20 s while epochs land every
//! few milliseconds: every query sees one whole epoch, the same in both tables; and the
//! pipeline's output is what it is without queries.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Endpoint;

use super::{Serving, serving, volley};

/// Rides per rider per second, and rides per second: for every closed second, both tables
/// sum to the same count, at every epoch.
const PIPELINE: &str = "
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' 'COUNT', 'rate' '5000', 'pace' 'PACE', 'riders' '300', 'seed' '11',
         'max_delay' '2 ms', 'max_rows' '64',
         'watermark' 'event_time - INTERVAL ''1 millisecond''');
CREATE EXTERNAL TABLE per_rider STORED AS PARQUET LOCATION 'out/per_rider'
OPTIONS ('merge_key' 'rider_id, second');
CREATE EXTERNAL TABLE per_second STORED AS PARQUET LOCATION 'out/per_second'
OPTIONS ('merge_key' 'second');
INSERT INTO per_rider
SELECT rider_id, date_bin(INTERVAL '1 second', event_time) AS second, count(*) AS n
FROM rides GROUP BY 1, 2;
INSERT INTO per_second
SELECT date_bin(INTERVAL '1 second', event_time) AS second, count(*) AS n
FROM rides GROUP BY 1;";

const COUNT: u64 = 110_000;

/// One query over both tables and the epoch it saw.
const INVARIANT: &str = "
SELECT p.published_epoch AS epoch, a.rides AS a_rides, a.seconds AS a_seconds,
       b.rides AS b_rides, b.seconds AS b_seconds
FROM (SELECT CAST(coalesce(sum(n), 0) AS BIGINT) AS rides, count(DISTINCT second) AS seconds
      FROM per_rider) a
CROSS JOIN (SELECT CAST(coalesce(sum(n), 0) AS BIGINT) AS rides, count(*) AS seconds
            FROM live.per_second) b
CROSS JOIN system.pipelines p";

fn write_pipeline(dir: &Path, pace: &str) {
    let sql = PIPELINE
        .replace("COUNT", &COUNT.to_string())
        .replace("PACE", pace);
    std::fs::write(dir.join("p.sql"), sql).unwrap();
}

/// Every row of every Parquet file under `dir`, sorted, as text.
fn rows_of(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = std::fs::File::open(&path).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let text = arrow::util::pretty::pretty_format_batches(&[batch]).unwrap();
            rows.extend(
                text.to_string()
                    .lines()
                    .skip(3)
                    .filter(|l| l.starts_with('|'))
                    .map(str::to_string),
            );
        }
    }
    rows.sort();
    rows
}

fn int(batch: &RecordBatch, column: &str) -> i64 {
    let array = batch.column_by_name(column).unwrap();
    match array.data_type() {
        arrow::datatypes::DataType::UInt64 => {
            i64::try_from(array.as_primitive::<UInt64Type>().value(0)).unwrap()
        }
        _ => array.as_primitive::<Int64Type>().value(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_for_twenty_seconds_see_whole_epochs_only() {
    let queried = tempfile::tempdir().unwrap();
    write_pipeline(queried.path(), "realtime");
    let Serving {
        mut child,
        addr,
        stderr: drain,
        ..
    } = serving(
        volley()
            .args(["run", "p.sql", "--no-checkpoint"])
            .current_dir(queried.path()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let addr = addr.clone();
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = FlightSqlServiceClient::new(channel);
            let mut epochs = BTreeSet::new();
            let mut queries = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                // The server goes away when the pipeline ends: stop there.
                let Ok(info) = client.execute(INVARIANT.into(), None).await else {
                    break;
                };
                let ticket = info.endpoint[0].ticket.clone().unwrap();
                let Ok(stream) = client.do_get(ticket).await else {
                    break;
                };
                let Ok(batches) = stream.try_collect::<Vec<_>>().await else {
                    break;
                };
                let b = &batches[0];
                let (a_rides, b_rides) = (int(b, "a_rides"), int(b, "b_rides"));
                let (a_seconds, b_seconds) = (int(b, "a_seconds"), int(b, "b_seconds"));
                let epoch = int(b, "epoch");
                assert_eq!(
                    (a_rides, a_seconds),
                    (b_rides, b_seconds),
                    "epoch {epoch}: the two tables disagree (a partial epoch, or two epochs)"
                );
                epochs.insert(epoch);
                queries += 1;
            }
            (queries, epochs)
        }));
    }
    let mut queries = 0;
    let mut epochs = BTreeSet::new();
    for client in clients {
        let (q, e) = client.await.unwrap();
        queries += q;
        epochs.extend(e);
    }
    stop.store(true, Ordering::Relaxed);
    let code = child.wait().unwrap();
    let log = drain.join().unwrap().join("\n");
    assert_eq!(code.code(), Some(0), "{log}");
    println!(
        "{queries} queries saw {} distinct epochs (up to {:?})",
        epochs.len(),
        epochs.last()
    );
    // Debug builds on two cores run a few hundred of each; both bounds only guard against a
    // test that did not exercise anything.
    assert!(queries >= 100, "only {queries} queries ran");
    assert!(epochs.len() >= 50, "only {} epochs were seen", epochs.len());

    // The same pipeline without queries (and without pacing) writes the same rows.
    let alone = tempfile::tempdir().unwrap();
    write_pipeline(alone.path(), "max");
    let out = volley()
        .args(["run", "p.sql", "--no-checkpoint", "--no-flight", "--quiet"])
        .current_dir(alone.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["out/per_rider", "out/per_second"] {
        let with = rows_of(&queried.path().join(table));
        let without = rows_of(&alone.path().join(table));
        assert!(!with.is_empty(), "{table} is empty");
        assert_eq!(with, without, "{table} differs with queries running");
    }
}

//! `volley run` serves its live tables over Flight SQL while the pipeline runs.

use std::time::Duration;

use arrow::array::{Array, Int64Array};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

use super::{Serving, flight_client, serving, volley};

async fn total(client: &mut FlightSqlServiceClient<Channel>) -> (i64, i64) {
    let info = client
        .execute(
            "SELECT CAST(sum(n) AS BIGINT) AS total, count(*) AS riders FROM per_rider".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let b = &batches[0];
    let col = |i: usize| {
        let a = b.column(i).as_any().downcast_ref::<Int64Array>().unwrap();
        if a.is_null(0) { 0 } else { a.value(0) }
    };
    (col(0), col(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pipeline_serves_its_live_tables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
         OPTIONS ('rate' '2000', 'pace' 'realtime', 'max_delay' '50 ms',
                  'watermark' 'event_time - INTERVAL ''1 second''');
         CREATE EXTERNAL TABLE per_rider STORED AS BLACKHOLE LOCATION 'x'
         OPTIONS ('merge_key' 'rider_id');
         INSERT INTO per_rider SELECT rider_id, count(*) AS n FROM rides GROUP BY rider_id;",
    )
    .unwrap();
    let Serving {
        mut child,
        addr,
        announced,
        stderr: drain,
    } = serving(
        volley()
            .args(["run", "p.sql", "--no-checkpoint"])
            .current_dir(dir.path()),
    );
    assert!(announced.contains("live tables: per_rider"), "{announced}");
    let mut client = flight_client(&addr).await;
    let mut first = (0, 0);
    for _ in 0..100 {
        first = total(&mut client).await;
        if first.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.0 > 0 && first.1 > 0, "no rows seen: {first:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = total(&mut client).await;
    assert!(
        second.0 > first.0,
        "{first:?} then {second:?}: the table did not move"
    );
    // Every row counted once per rider: as many riders as rows at most.
    assert!(second.1 <= second.0, "{second:?}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    let err = drain.join().unwrap().join("\n");
    assert_eq!(code.code(), Some(0), "{err}");
}

#[test]
fn a_taken_port_or_a_non_loopback_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides' OPTIONS ('count' '10');
         CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION 'out/raw';
         INSERT INTO raw SELECT request_id FROM rides;",
    )
    .unwrap();
    for (flight, want) in [
        (addr.as_str(), "cannot serve Flight SQL on"),
        ("0.0.0.0:0", "needs a token"),
        ("here", "is not an address"),
    ] {
        let out = volley()
            .args([
                "run",
                "p.sql",
                "--quiet",
                "--no-checkpoint",
                "--flight",
                flight,
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flight}: {err}");
        assert!(err.contains(want), "{flight}: {err}");
    }
    // --no-flight runs without a server.
    let out = volley()
        .args([
            "run",
            "p.sql",
            "--quiet",
            "--no-checkpoint",
            "--no-flight",
            "--flight",
            &addr,
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volley_batch_serves_its_results_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides' OPTIONS ('count' '5000');
         CREATE EXTERNAL TABLE per_rider STORED AS BLACKHOLE LOCATION 'x'
         OPTIONS ('merge_key' 'rider_id');
         INSERT INTO per_rider SELECT rider_id, count(*) AS n FROM rides GROUP BY rider_id;",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    // The Parquet writer helper runs its own runtime: not on this one's thread.
    let input = std::thread::spawn(move || super::rides_parquet(&path, 5000))
        .join()
        .unwrap();
    let Serving {
        mut child,
        addr,
        announced,
        stderr: drain,
    } = serving(
        volley()
            .args(["batch", "p.sql", "--serve", "--input"])
            .arg(format!("rides={}", input.display()))
            .current_dir(dir.path()),
    );
    assert!(announced.contains("live tables: per_rider"), "{announced}");
    let mut client = flight_client(&addr).await;
    // Every input row counted once, as the batch computed it.
    assert_eq!(total(&mut client).await.0, 5000);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    let err = drain.join().unwrap().join("\n");
    assert_eq!(code.code(), Some(0), "{err}");
}

async fn count(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> i64 {
    let info = client.execute(sql.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tables_and_live_retention_are_queried_live() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
         OPTIONS ('rate' '2000', 'pace' 'realtime', 'max_delay' '20 ms');
         CREATE EXTERNAL TABLE recent STORED AS MEMORY LOCATION 'recent'
         OPTIONS ('live_retention' '100 rows');
         CREATE EXTERNAL TABLE raw STORED AS JSON LOCATION 'out/raw'
         OPTIONS ('live_retention' '1 minute');
         CREATE EXTERNAL TABLE per_rider STORED AS MEMORY LOCATION 'per_rider'
         OPTIONS ('merge_key' 'rider_id');
         INSERT INTO recent SELECT request_id, rider_id FROM rides;
         INSERT INTO raw SELECT request_id FROM rides;
         INSERT INTO per_rider SELECT rider_id, count(*) AS n FROM rides GROUP BY rider_id;",
    )
    .unwrap();
    let Serving {
        mut child,
        addr,
        announced,
        stderr: drain,
    } = serving(
        volley()
            .args(["run", "p.sql", "--no-checkpoint"])
            .current_dir(dir.path()),
    );
    assert!(
        announced.contains("live tables: per_rider, raw, recent"),
        "{announced}"
    );
    let mut client = flight_client(&addr).await;
    let mut seen = (0, 0, 0);
    for _ in 0..100 {
        // The rides counted first: the tables only grow, so once 500 are counted the next
        // queries see at least as many (asking in the other order raced with a slow query).
        let counted = total(&mut client).await.0;
        seen = (
            count(&mut client, "SELECT count(*) FROM recent").await,
            count(&mut client, "SELECT count(*) FROM raw").await,
            counted,
        );
        if seen.2 > 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last 100 rows, the last minute's rows (all of them so far), every ride counted.
    assert_eq!(seen.0, 100, "{seen:?}");
    assert!(seen.1 > 100, "{seen:?}");
    assert!(seen.2 > 500, "{seen:?}");
    // 100 distinct rides, none older than the rows `raw` holds.
    let distinct = count(&mut client, "SELECT count(DISTINCT request_id) FROM recent").await;
    assert_eq!(distinct, 100);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    let err = drain.join().unwrap().join("\n");
    assert_eq!(code.code(), Some(0), "{err}");

    // A memory table that keeps nothing is refused, naming the options that fix it.
    std::fs::write(
        dir.path().join("bad.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides' OPTIONS ('count' '10');
         CREATE EXTERNAL TABLE recent STORED AS MEMORY LOCATION 'recent';
         INSERT INTO recent SELECT request_id FROM rides;",
    )
    .unwrap();
    let out = volley()
        .args(["run", "bad.sql", "--no-checkpoint", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("live_retention") && err.contains("merge_key"),
        "{err}"
    );
}

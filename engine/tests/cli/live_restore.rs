//! A restarted pipeline serves what it served before: live tables come back from the
//! checkpoint, not only the keys updated since the restart.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use arrow::array::{Array, Int64Array, UInt64Array};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

use super::{flight_client, serving, volley};

const PIPELINE: &str = "
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('rate' '3000', 'pace' 'realtime', 'max_delay' '20 ms');
CREATE EXTERNAL TABLE per_rider STORED AS BLACKHOLE LOCATION 'x'
OPTIONS ('merge_key' 'rider_id');
INSERT INTO per_rider SELECT rider_id, count(*) AS n FROM rides GROUP BY rider_id;";

/// Riders, rides counted, and the epoch shown, in one snapshot.
async fn state(client: &mut FlightSqlServiceClient<Channel>) -> (i64, i64, u64) {
    let sql = "SELECT count(*) AS riders, CAST(coalesce(sum(n), 0) AS BIGINT) AS rides,
               max(p.published_epoch) AS epoch
               FROM per_rider CROSS JOIN system.pipelines p";
    let info = client.execute(sql.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<_> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let b = &batches[0];
    let int = |i: usize| {
        let a = b.column(i).as_any().downcast_ref::<Int64Array>().unwrap();
        if a.is_null(0) { 0 } else { a.value(0) }
    };
    let epoch = b.column(2).as_any().downcast_ref::<UInt64Array>().unwrap();
    (
        int(0),
        int(1),
        if epoch.is_null(0) { 0 } else { epoch.value(0) },
    )
}

fn start(dir: &Path) -> (Child, String, std::thread::JoinHandle<Vec<String>>) {
    let served = serving(volley().args(["run", "p.sql"]).current_dir(dir));
    (served.child, served.addr, served.stderr)
}

async fn connect(addr: &str) -> FlightSqlServiceClient<Channel> {
    flight_client(addr).await
}

fn stop(mut child: Child, drain: std::thread::JoinHandle<Vec<String>>) {
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let code = child.wait().unwrap();
    let log = drain.join().unwrap().join("\n");
    assert_eq!(code.code(), Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_live_tables_it_served_before() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.sql"), PIPELINE).unwrap();
    let (child, addr, drain) = start(dir.path());
    let mut client = connect(&addr).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = state(&mut client).await;
    assert!(before.0 > 1000, "{before:?}");
    stop(child, drain);

    let (child, addr, drain) = start(dir.path());
    let mut client = connect(&addr).await;
    // The first snapshot after the restore (epoch numbering continues from the checkpoint).
    let mut after = state(&mut client).await;
    while after.2 <= before.2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = state(&mut client).await;
    }
    // Every rider seen before is there, counted at least as before; without the restored
    // table it would hold only the few riders of the first epochs since the restart.
    assert!(
        after.0 >= before.0 && after.1 >= before.1,
        "{before:?} then {after:?}"
    );
    stop(child, drain);
}

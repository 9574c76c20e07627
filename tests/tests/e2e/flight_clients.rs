//! Real Flight SQL clients against a running pipeline: ADBC's driver and flightsql-dbapi
//! (pyarrow's Flight client) query its live and system tables, with a token required, and
//! what they see equals what the sink committed for the same epoch.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::volley_command;
use crate::readers::python;

#[test]
fn adbc_and_flightsql_dbapi_see_the_sinks_committed_rows() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
         OPTIONS ('rate' '3000', 'pace' 'realtime', 'max_delay' '50 ms', 'riders' '500',
                  'disorder' '2 seconds',
                  'watermark' 'event_time - INTERVAL ''100 milliseconds''',
                  'max_dead_letters' '100%');
         CREATE EXTERNAL TABLE per_rider STORED AS PARQUET LOCATION 'out/per_rider'
         OPTIONS ('merge_key' 'rider_id, second');
         INSERT INTO per_rider
         SELECT rider_id, date_bin(INTERVAL '1 second', event_time) AS second, count(*) AS n
         FROM rides GROUP BY 1, 2;",
    )
    .unwrap();
    let mut child = volley_command()
        .args(["run", "pipeline.sql", "--flight-token", "s3cret"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("volley exited before serving").unwrap();
        if let Some(rest) = line.strip_prefix("volley: Flight SQL on grpc://") {
            assert!(rest.contains("token required"), "{line}");
            break rest.split([' ', ',']).next().unwrap().to_string();
        }
    };
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // Let a few epochs land (and late rows become dead letters).
    std::thread::sleep(Duration::from_secs(3));
    let out = Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/flight_clients.py"))
        .args([
            addr.as_str(),
            dir.path().join("out/per_rider").to_str().unwrap(),
            "s3cret",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let code = child.wait().unwrap();
    let log = drain.join().unwrap().join("\n");
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "the clients' checks failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(code.code(), Some(0), "{log}");
}

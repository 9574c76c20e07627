//! The crash harness: the real `volley` binary, killed with SIGKILL at random instants and
//! aborted at every named fail point, restarted each time; at the end every sink — Parquet
//! files and Delta tables — must equal the batch result over the same input: no row lost,
//! none twice. The Delta tables are also read by independent readers (Python `deltalake`,
//! DuckDB), whose view of the transaction log must show one `txn` action per committed epoch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use volley_engine::batch::batch_outputs;
use volley_engine::checkpoint::failpoint::POINTS;
use volley_engine::driver::splitmix64;
use volley_engine::verify::{VerifyReport, compare_outputs};
use volley_sql::Pipeline;
use volley_sql::stream::QueryPlan;

use crate::harness::{assert_exact, pipeline, rows};
use crate::process::{Kill, run_killed};
use crate::readers::{conform, delta_stored, independent_read, python, sink_rows, table_in};

/// Windowed (open windows span every kill), keyed (upserts) and stateless INSERTs over a
/// paced, deterministic generator, into Parquet files and Delta tables (append, MERGE).
fn sql(count: u64) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '{count}', 'rate' '2000', 'pace' 'realtime', 'seed' '5', 'disorder' '1 second',
         'cities' '6', 'riders' '300', 'max_delay' '100ms',
         'watermark' 'event_time - INTERVAL ''2 seconds''');
CREATE EXTERNAL TABLE by_cell STORED AS PARQUET LOCATION 'out/by_cell';
CREATE EXTERNAL TABLE by_cell_delta STORED AS DELTA LOCATION 'out/by_cell_delta';
CREATE EXTERNAL TABLE per_rider_delta STORED AS DELTA LOCATION 'out/per_rider_delta'
OPTIONS ('merge_key' 'rider_id');
CREATE EXTERNAL TABLE raw_delta STORED AS DELTA LOCATION 'out/raw_delta';
INSERT INTO by_cell
SELECT geohash(lat, lon, 4) AS cell, date_bin(INTERVAL '1 second', event_time) AS w,
       count(*) AS n, count(DISTINCT rider_id) AS riders
FROM rides GROUP BY 1, 2;
INSERT INTO by_cell_delta
SELECT geohash(lat, lon, 4) AS cell, date_bin(INTERVAL '1 second', event_time) AS w,
       count(*) AS n, avg(lat) AS mean_lat
FROM rides GROUP BY 1, 2;
INSERT INTO per_rider_delta
SELECT rider_id, count(*) AS n, min(lat) AS min_lat FROM rides GROUP BY rider_id;
INSERT INTO raw_delta
SELECT request_id, rider_id, event_time FROM rides WHERE rider_id % 5 = 0;
"#
    )
}

const DELTA_SINKS: [&str; 3] = ["by_cell_delta", "per_rider_delta", "raw_delta"];

/// Whether the checkpoint `_latest` names holds open window state for the first INSERT.
fn latest_has_open_windows(dir: &Path) -> bool {
    let root = dir.join(".volley/checkpoints/pipeline");
    let Ok(epoch) = std::fs::read_to_string(root.join("_latest")) else {
        return false;
    };
    let manifest = root.join(format!(
        "checkpoints/{:020}/manifest.json",
        epoch.trim().parse::<u64>().unwrap()
    ));
    let Ok(text) = std::fs::read_to_string(manifest) else {
        return false;
    };
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["queries"][0]["state_rows"].as_u64().unwrap_or(0) > 0
}

type Outputs = BTreeMap<String, Vec<(u64, Vec<RecordBatch>)>>;

fn compare(
    p: &Pipeline,
    plans: &[QueryPlan],
    batch: &BTreeMap<String, Vec<RecordBatch>>,
    outputs: &Outputs,
) -> VerifyReport {
    compare_outputs(p, plans, batch, outputs, 5).unwrap()
}

#[test]
fn killed_and_restarted_at_random_instants_and_fail_points_every_sink_equals_batch() {
    // 20 s of events at the generator's pace: the kills land mid-stream.
    let count = 40_000;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), sql(count)).unwrap();

    let mut kills: Vec<Kill> = Vec::new();
    let mut seed = 17u64;
    for _ in 0..14 {
        seed = splitmix64(seed);
        kills.push(Kill::After(Duration::from_millis(150 + seed % 1350)));
    }
    for hit in [2, 5] {
        for point in POINTS {
            kills.push(Kill::At(format!("{point}:{hit}")));
        }
    }
    // Interleave fail points with random kills.
    let mut order: Vec<usize> = (0..kills.len()).collect();
    for i in (1..order.len()).rev() {
        seed = splitmix64(seed);
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let mut killed = 0;
    let mut resumed_open_windows = 0;
    for i in order {
        if latest_has_open_windows(dir.path()) {
            resumed_open_windows += 1;
        }
        if run_killed(dir.path(), Some(&kills[i])) {
            killed += 1;
        }
    }
    assert!(
        !run_killed(dir.path(), None),
        "the last run finishes by itself"
    );
    assert!(
        killed >= 20,
        "only {killed} of {} runs were killed mid-stream",
        kills.len()
    );
    assert!(
        resumed_open_windows > 0,
        "some restart restored open windows"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = pipeline(&sql(count)).await;
        let input = rows(&p).await;
        let mut batch = batch_outputs(&p, &input).await.unwrap();
        let plans = crate::harness::plans(&p).await;
        // Delta keeps timestamps to the microsecond: compare those sinks at that precision.
        let stored = |plan: &QueryPlan| {
            if DELTA_SINKS.contains(&plan.target.as_str()) {
                delta_stored(&plan.output_schema)
            } else {
                Arc::clone(&plan.output_schema)
            }
        };
        for plan in &plans {
            let expected = batch.get_mut(&plan.target).unwrap();
            *expected = conform(&stored(plan), expected);
        }
        let mut ours: Outputs = BTreeMap::new();
        for plan in &plans {
            let table = table_in(&p, &plan.target, dir.path());
            let rows = sink_rows(&table, &stored(plan)).await;
            ours.insert(plan.target.clone(), vec![(1, rows)]);
        }
        assert_exact(
            &compare(&p, &plans, &batch, &ours),
            &format!("after {killed} kills"),
        );

        let Some(python) = python() else { return };
        let mut by_deltalake = ours.clone();
        let mut by_duckdb = ours.clone();
        for name in DELTA_SINKS {
            let plan = plans.iter().find(|q| q.target == name).unwrap();
            let table_dir = dir.path().join("out").join(name);
            let app_id = format!("pipeline:{name}");
            let read = independent_read(&python, &table_dir, &app_id, &stored(plan));
            by_deltalake.insert(name.to_string(), vec![(1, read.deltalake)]);
            by_duckdb.insert(name.to_string(), vec![(1, read.duckdb)]);
            assert!(!read.txn_actions.is_empty(), "{name}: no txn actions");
            assert!(
                read.txn_actions.iter().all(|(app, _)| *app == app_id),
                "{name}: {:?}",
                read.txn_actions
            );
            let versions: Vec<i64> = read.txn_actions.iter().map(|(_, v)| *v).collect();
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{name}: an epoch was committed twice: {versions:?}"
            );
            assert_eq!(read.txn_version, versions.last().copied(), "{name}");
        }
        assert_exact(
            &compare(&p, &plans, &batch, &by_deltalake),
            "Delta tables read by Python deltalake",
        );
        assert_exact(
            &compare(&p, &plans, &batch, &by_duckdb),
            "Delta tables read by DuckDB",
        );
    });
}

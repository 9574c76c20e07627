//! Checkpoints written before operators had named state (format 1: the query's own
//! aggregate in its own fields, the aggregates feeding it in `inner`, a join in `operators`)
//! still restore: a job fails, its checkpoint is rewritten into format 1, and the restarted
//! job finishes equal to batch.

use serde_json::{Value, json};

use crate::recovery::failed_runs_rewriting_checkpoints;

/// An aggregate over an aggregate, a windowed join of two aggregates and an aggregate over an
/// interval join, over payments with NULLs, NaN, ±0, ±inf, hot users and duplicate times.
const SQL: &str = r#"
CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
OPTIONS ('count' '3000', 'rate' '50', 'seed' '5', 'disorder' '2 seconds',
         'riders' '30', 'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE rolled STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE paired STORED AS BLACKHOLE LOCATION 'x';
CREATE EXTERNAL TABLE follow_ups STORED AS BLACKHOLE LOCATION 'x';
INSERT INTO rolled
SELECT merchant, date_bin(INTERVAL '30 seconds', w) AS w30, sum(n) AS n, max(hi) AS hi
FROM (SELECT merchant, date_bin(INTERVAL '10 seconds', event_time) AS w, count(*) AS n,
             max(amount) AS hi
      FROM payments GROUP BY 1, 2)
GROUP BY 1, 2;
INSERT INTO paired
SELECT a.w, a.merchant, a.n, b.users
FROM (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, merchant, count(*) AS n
      FROM payments GROUP BY 1, 2) a
JOIN (SELECT date_bin(INTERVAL '10 seconds', event_time) AS w, merchant,
             count(DISTINCT user_id) AS users
      FROM payments WHERE channel % 2 = 0 GROUP BY 1, 2) b
  ON a.w = b.w AND a.merchant = b.merchant;
INSERT INTO follow_ups
SELECT date_bin(INTERVAL '20 seconds', a.event_time) AS w, count(*) AS n, max(b.amount) AS top
FROM payments a JOIN payments b
  ON a.user_id = b.user_id AND b.event_time > a.event_time
 AND b.event_time <= a.event_time + INTERVAL '2 seconds'
GROUP BY 1;
"#;

/// Rewrites every checkpoint manifest under `dir` into format 1, as builds before named
/// operator state wrote it (the state files stay where they are: a manifest names them).
fn to_format_one(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path().join("manifest.json");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
        if manifest["format"] == json!(1) {
            continue;
        }
        assert_eq!(manifest["format"], json!(3), "{}", path.display());
        manifest["format"] = json!(1);
        for query in manifest["queries"].as_array_mut().unwrap() {
            *query = query_to_format_one(query);
        }
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    }
}

/// One query's entry in format 1: a join stays in `operators`; the last aggregate, unless a
/// join is last, is the query's own; the aggregates before it are `inner`.
fn query_to_format_one(query: &Value) -> Value {
    let operators = query["operators"].as_array().cloned().unwrap_or_default();
    let is_join = |o: &Value| o["operator"].as_str().unwrap().contains("#join");
    let piece = |o: &Value, name: &str| {
        o["state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == json!(name))
            .cloned()
    };
    let mut aggregates: Vec<Value> = operators.iter().filter(|o| !is_join(o)).cloned().collect();
    let joins: Vec<Value> = operators.iter().filter(|o| is_join(o)).cloned().collect();
    let own = match operators.last() {
        Some(last) if !is_join(last) => aggregates.pop(),
        _ => None,
    };
    let inner: Vec<Value> = aggregates
        .iter()
        .map(|o| {
            let state = piece(o, "state").unwrap();
            json!({
                "name": o["operator"],
                "emitted_upto": o["marks"][0],
                "state_file": state["file"],
                "state_rows": state["rows"],
            })
        })
        .collect();
    let mut out = json!({
        "target": query["target"],
        "shape": query["shape"],
        "emitted_upto": null,
        "state_file": null,
        "state_rows": 0,
        "stamps_file": null,
        "inner": inner,
        "operators": joins,
    });
    if let Some(own) = own {
        let state = piece(&own, "state").unwrap();
        out["emitted_upto"] = own["marks"][0].clone();
        out["state_file"] = state["file"].clone();
        out["state_rows"] = state["rows"].clone();
        if let Some(stamps) = piece(&own, "stamps") {
            out["stamps_file"] = stamps["file"].clone();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_one_checkpoint_restores_into_named_operator_state() {
    // (rows after which each run fails, checkpoint interval in epochs, workers per run)
    let schedules = [
        (vec![900, 2100], 1, vec![2, 1, 3]),
        (vec![1500], 3, vec![1, 2]),
    ];
    failed_runs_rewriting_checkpoints(
        SQL,
        "payments",
        &["rolled", "paired", "follow_ups"],
        &schedules,
        to_format_one,
    )
    .await;
}

#[test]
fn format_one_names_the_query_s_own_aggregate_after_those_feeding_it() {
    use volley_engine::checkpoint::manifest::QueryCheckpoint;
    let saved = json!({
        "target": "t",
        "shape": "s",
        "emitted_upto": 40,
        "state_file": "q0.arrow",
        "state_rows": 3,
        "stamps_file": "q0.stamps.arrow",
        "inner": [
            {"name": "t#aggregate", "emitted_upto": 20, "state_file": "q0.inner0.arrow", "state_rows": 5},
            {"name": "t#aggregate1", "emitted_upto": 30, "state_file": "q0.inner1.arrow", "state_rows": 7},
        ],
    });
    let query: QueryCheckpoint = serde_json::from_value(saved).unwrap();
    let names: Vec<&str> = query
        .operators
        .iter()
        .map(|o| o.operator.as_str())
        .collect();
    assert_eq!(names, ["t#aggregate", "t#aggregate1", "t#aggregate2"]);
    let own = &query.operators[2];
    assert_eq!(own.marks, [Some(40)]);
    let pieces: Vec<(&str, &str)> = own
        .state
        .iter()
        .map(|p| (p.name.as_str(), p.file.as_str()))
        .collect();
    assert_eq!(
        pieces,
        [("state", "q0.arrow"), ("stamps", "q0.stamps.arrow")]
    );
    assert_eq!(query.state_rows, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_missing_an_operator_s_state_is_refused_not_restored_empty() {
    use std::collections::HashMap;

    use volley_connectors::{ConnectorRegistry, Source};
    use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
    use volley_engine::driver::BatchSizing;
    use volley_engine::memory::VecSource;
    use volley_engine::setup::{JobOverrides, build_stream_job};

    use crate::harness::{pipeline, rows};
    use crate::recovery::FailingSource;

    let p = pipeline(SQL).await;
    let input = rows(&p).await;
    let (schema, batches) = input["payments"].clone();
    let dir = tempfile::tempdir().unwrap();
    let overrides = |source: Box<dyn Source>| JobOverrides {
        sources: HashMap::from([("payments".to_string(), source)]),
        sizing: Some(BatchSizing::Fixed(100)),
        checkpoint: Some(CheckpointConfig {
            dir: dir.path().display().to_string(),
            interval: CheckpointInterval::Epochs(1),
            keep: 2,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    };
    let registry = ConnectorRegistry::builtin();
    let failing = FailingSource {
        inner: VecSource::new(schema.clone(), batches.clone()),
        fail_at: 1500,
    };
    let (job, _) = build_stream_job(&p, &registry, overrides(Box::new(failing)))
        .await
        .unwrap();
    assert!(job.run().await.is_err(), "the first run fails at row 1500");
    // Drop the inner aggregate's state from every checkpoint of `rolled`.
    let mut rewritten = 0;
    for entry in std::fs::read_dir(dir.path().join("checkpoints")).unwrap() {
        let path = entry.unwrap().path().join("manifest.json");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        rewritten += 1;
        let mut manifest: Value = serde_json::from_slice(&bytes).unwrap();
        let operators = manifest["queries"][0]["operators"].as_array_mut().unwrap();
        assert_eq!(operators.len(), 2, "{operators:?}");
        operators.remove(0);
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    }
    assert!(rewritten > 0, "the first run wrote checkpoints");
    let source = Box::new(VecSource::new(schema, batches));
    let (job, _) = build_stream_job(&p, &registry, overrides(source))
        .await
        .unwrap();
    let error = job.run().await.unwrap_err().to_string();
    assert!(
        error.contains("holds no state for rolled#aggregate of INSERT INTO rolled"),
        "{error}"
    );
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `tests/data/checkpoint_v2` holds, byte for byte, what the `volley` binary of format 2
/// (before stream-graph operator ids) left behind when it was aborted after writing the
/// checkpoint of epoch 14 but before pointing at it: checkpoints 13 and 14, the epoch log,
/// and the sinks (Parquet files, a Delta table) as of then. Today's binary restores epoch 13,
/// re-reads the logged epoch and finishes with every sink equal to batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_written_by_the_format_two_binary_restores_and_finishes_equal_to_batch() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use volley_engine::batch::batch_outputs;
    use volley_engine::verify::compare_outputs;
    use volley_sql::stream::QueryPlan;

    use crate::harness::{assert_exact, pipeline, plans, rows};
    use crate::process::volley_ok;
    use crate::readers::{conform, delta_stored, sink_rows, table_in};

    let frozen = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/checkpoint_v2");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&frozen, dir.path());
    let run = volley_ok(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--quiet",
            "--no-flight",
            "--checkpoint-dir",
            "checkpoint",
        ],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("restored checkpoint of epoch 13") && err.contains("re-reading 1 logged"),
        "{err}"
    );

    let sql = std::fs::read_to_string(frozen.join("pipeline.sql")).unwrap();
    let p = pipeline(&sql).await;
    let input = rows(&p).await;
    let mut batch = batch_outputs(&p, &input).await.unwrap();
    let plans = plans(&p).await;
    let stored = |plan: &QueryPlan| {
        if plan.target == "per_user" {
            delta_stored(&plan.output_schema)
        } else {
            Arc::clone(&plan.output_schema)
        }
    };
    let mut ours = BTreeMap::new();
    for plan in &plans {
        let expected = batch.get_mut(&plan.target).unwrap();
        *expected = conform(&stored(plan), expected);
        assert!(!expected.is_empty(), "{}: batch wrote nothing", plan.target);
        let table = table_in(&p, &plan.target, dir.path());
        ours.insert(
            plan.target.clone(),
            vec![(1, sink_rows(&table, &stored(plan)).await)],
        );
    }
    assert_exact(
        &compare_outputs(&p, &plans, &batch, &ours, 5).unwrap(),
        "restored from the format-2 checkpoint",
    );
}

/// An operator's checkpoint id is what it computes, not where it sits: an aggregate planned in
/// below it renumbers its place in the plan (`#aggregate1` becomes `#aggregate2`) but leaves
/// its id, so its state keeps its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_s_id_survives_a_node_inserted_below_it() {
    use volley_sql::stream::graph::node_ids;

    use crate::harness::{pipeline, plans};

    let head = "CREATE EXTERNAL TABLE payments STORED AS GENERATOR LOCATION 'payments'
        OPTIONS ('count' '10', 'watermark' 'event_time - INTERVAL ''3 seconds''');
        CREATE EXTERNAL TABLE t STORED AS BLACKHOLE LOCATION 'x';";
    let outer = "INSERT INTO t SELECT merchant, date_bin(INTERVAL '30 seconds', w) AS w30, sum(n) AS n FROM ";
    let one = format!(
        "{head}{outer}(SELECT merchant, date_bin(INTERVAL '10 seconds', event_time) AS w, count(*) AS n
           FROM payments GROUP BY 1, 2) GROUP BY 1, 2;"
    );
    let two = format!(
        "{head}{outer}(SELECT merchant, date_bin(INTERVAL '10 seconds', w5) AS w, sum(c) AS n
           FROM (SELECT merchant, date_bin(INTERVAL '5 seconds', event_time) AS w5, count(*) AS c
                 FROM payments GROUP BY 1, 2) GROUP BY 1, 2) GROUP BY 1, 2;"
    );
    let one = plans(&pipeline(&one).await).await;
    let two = plans(&pipeline(&two).await).await;
    let (one, two) = (one[0].nodes(), two[0].nodes());
    assert_eq!((one.len(), two.len()), (2, 3));
    let names = |nodes: &[&dyn volley_sql::stream::graph::StreamNode]| -> Vec<String> {
        nodes.iter().map(|n| n.port().name).collect()
    };
    assert_eq!(names(&one)[1], "t#aggregate1");
    assert_eq!(names(&two)[2], "t#aggregate2");
    let (ids_one, ids_two) = (node_ids(&one), node_ids(&two));
    assert_eq!(ids_one[1], ids_two[2], "{ids_one:?} {ids_two:?}");
    assert!(ids_one[1].starts_with("t#aggregate-"), "{ids_one:?}");
    // Different computations have different ids.
    assert_ne!(ids_one[0], ids_one[1]);
    assert_ne!(ids_two[0], ids_two[1]);
}

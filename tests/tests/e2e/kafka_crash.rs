//! Kafka → windowed aggregate → Kafka (`exactly_once`) + Delta, with the `volley` binary
//! SIGKILLed at random instants and aborted between a Kafka commit and its checkpoint. In
//! the end a `read_committed` consumer (Python confluent-kafka) sees the batch result per key,
//! the Delta table equals batch, every malformed message is a dead letter, and no valid event
//! is missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::json::LineDelimitedWriter;
use volley_engine::batch::batch_outputs;
use volley_engine::verify::compare_outputs;

use crate::harness::{assert_exact, pipeline};
use crate::kafka::{broker, produce, read_committed, undecodable_letters, unique_topic};
use crate::process::{Kill, run_killed};
use crate::readers::{conform, delta_stored, python, sink_rows, table_in};

fn sql(broker: &str, topic: &str) -> String {
    format!(
        r#"
CREATE EXTERNAL TABLE rides (
  request_id BIGINT NOT NULL, rider_id BIGINT NOT NULL, lat DOUBLE NOT NULL, lon DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL
) STORED AS KAFKA LOCATION '{broker}/{topic}'
OPTIONS ('format' 'json', 'bounded' 'latest', 'max_rows' '200', 'dead_letter' 'out/dead_letters',
         'watermark' 'event_time - INTERVAL ''3 seconds''');
CREATE EXTERNAL TABLE demand STORED AS KAFKA LOCATION '{broker}/{topic}-out'
OPTIONS ('merge_key' 'cell, w', 'exactly_once' 'true');
CREATE EXTERNAL TABLE demand_delta STORED AS DELTA LOCATION 'out/demand_delta';
INSERT INTO demand
SELECT geohash(lat, lon, 3) AS cell, date_bin(INTERVAL '5 seconds', event_time) AS w,
       count(*) AS n, count(DISTINCT rider_id) AS riders
FROM rides GROUP BY 1, 2;
INSERT INTO demand_delta
SELECT geohash(lat, lon, 3) AS cell, date_bin(INTERVAL '5 seconds', event_time) AS w,
       count(*) AS n, count(DISTINCT rider_id) AS riders
FROM rides GROUP BY 1, 2;
"#
    )
}

/// `(cell, w) → n` of JSON rows.
fn counts(rows: impl Iterator<Item = serde_json::Value>) -> BTreeMap<(String, String), i64> {
    rows.map(|v| {
        (
            (
                v["cell"].as_str().unwrap().to_string(),
                v["w"].as_str().unwrap().to_string(),
            ),
            v["n"].as_i64().unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_the_topic_and_the_delta_table_equal_batch() {
    let Some(broker) = broker() else { return };
    let topic = unique_topic("crash");
    let (good, malformed) = produce(&broker, &topic, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    let text = sql(&broker, &topic);
    std::fs::write(dir.path().join("pipeline.sql"), &text).unwrap();

    let kills = [
        Kill::After(Duration::from_millis(700)),
        Kill::At("after_sink_commit_before_checkpoint:3".into()),
        Kill::After(Duration::from_millis(1100)),
        Kill::At("mid_sink_write:4".into()),
        Kill::After(Duration::from_millis(900)),
        Kill::At("after_sink_commit_before_checkpoint:5".into()),
        Kill::After(Duration::from_millis(1300)),
    ];
    let killed = kills
        .iter()
        .filter(|k| run_killed(dir.path(), Some(k)))
        .count();
    assert!(
        !run_killed(dir.path(), Some(&Kill::After(Duration::from_secs(120)))),
        "the last run finishes"
    );
    assert!(killed >= 5, "only {killed} runs were killed mid-run");

    // Batch over the good events.
    let p = pipeline(&text).await;
    let declared = Arc::clone(p.tables[0].declared_schema.as_ref().unwrap());
    let input = BTreeMap::from([("rides".to_string(), (declared, vec![good.clone()]))]);
    let mut batch = batch_outputs(&p, &input).await.unwrap();
    let plans = crate::harness::plans(&p).await;

    // The Delta table equals batch (at Delta's microsecond precision).
    let plan = plans.iter().find(|q| q.target == "demand_delta").unwrap();
    let stored = delta_stored(&plan.output_schema);
    let expected = batch.get_mut("demand_delta").unwrap();
    *expected = conform(&stored, expected);
    let table = table_in(&p, "demand_delta", dir.path());
    let mut stream = BTreeMap::new();
    stream.insert(
        "demand_delta".to_string(),
        vec![(1, sink_rows(&table, &stored).await)],
    );
    stream.insert("demand".to_string(), vec![(1, batch["demand"].clone())]);
    assert_exact(
        &compare_outputs(&p, &plans, &batch, &stream, 5).unwrap(),
        &format!("Delta after {killed} kills"),
    );

    // The topic, read_committed: the last value per key is the batch row.
    if let Some(python) = python() {
        let got = counts(
            read_committed(&python, &broker, &format!("{topic}-out"))
                .into_iter()
                .map(|m| m["value"].clone()),
        );
        let mut json = Vec::new();
        {
            let mut writer = LineDelimitedWriter::new(&mut json);
            for b in &batch["demand"] {
                writer.write(b).unwrap();
            }
            writer.finish().unwrap();
        }
        let want = counts(
            String::from_utf8_lossy(&json)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
        assert_eq!(got, want, "per key, the topic holds the batch result");
        assert_eq!(
            got.values().sum::<i64>(),
            good.num_rows() as i64,
            "no valid event missing"
        );
    }

    // Every malformed message is a dead letter exactly once.
    assert_eq!(undecodable_letters(dir.path()).len(), malformed);
}

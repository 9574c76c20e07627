//! `state_ttl` bounds a keyed aggregate's state by event time: a group not updated for that
//! long is forgotten (a later row starts it again), the same after a restore; and a keyed
//! aggregate over an event-time bucket that is not a window is flagged.

use std::collections::{BTreeSet, HashMap};

use volley_connectors::{ConnectorRegistry, Position, Sink, Source};
use volley_engine::checkpoint::{CheckpointConfig, CheckpointInterval};
use volley_engine::driver::{EpochInput, SourceEpoch};
use volley_engine::memory::{CollectSink, Collected, VecSource};
use volley_engine::runtime::StreamJob;
use volley_engine::setup::{JobOverrides, build_stream_job};

use crate::harness::pipeline;

fn sql(ttl: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'data/clicks.csv'
         OPTIONS ('watermark' 'ts');
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'user_id'{ttl});
         INSERT INTO out SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;"
    )
}

async fn job(sql: &str, checkpoint: Option<&std::path::Path>) -> (StreamJob, Collected) {
    let p = pipeline(sql).await;
    let (sink, collected) = CollectSink::new();
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    sinks.insert("out".into(), Box::new(sink));
    // Epochs are handed in by the test; the source only has to seek on restore.
    let all: Vec<(i64, i64)> = EPOCHS.iter().flat_map(|e| e.iter().copied()).collect();
    let rows = crate::harness::clicks(&all);
    let mut sources: HashMap<String, Box<dyn Source>> = HashMap::new();
    sources.insert(
        "clicks".into(),
        Box::new(VecSource::new(rows.schema(), vec![rows])),
    );
    let overrides = JobOverrides {
        sources,
        sinks,
        workers: Some(2),
        checkpoint: checkpoint.map(|dir| CheckpointConfig {
            dir: dir.display().to_string(),
            interval: CheckpointInterval::Epochs(1),
            keep: 2,
            from_scratch: false,
        }),
        ..JobOverrides::default()
    };
    let (mut job, _) = build_stream_job(&p, &ConnectorRegistry::builtin(), overrides)
        .await
        .unwrap();
    job.prepare().await.unwrap();
    (job, collected)
}

/// Epoch `n` (1-based) of `epochs`, as the driver would hand it over.
fn input(epochs: &[&[(i64, i64)]], n: usize) -> EpochInput {
    let before: u64 = epochs[..n - 1].iter().map(|e| e.len() as u64).sum();
    EpochInput {
        sources: vec![SourceEpoch {
            batches: vec![crate::harness::clicks(epochs[n - 1])],
            partitions: vec![None],
            start: Position::single(before),
            end: Position::single(before + epochs[n - 1].len() as u64),
            exhausted: false,
            rejected: Vec::new(),
            idle: BTreeSet::new(),
            bytes_read: None,
        }],
        replayed: false,
    }
}

/// `(user, n)` upserts of the last epoch written.
fn last_upserts(collected: &Collected) -> Vec<(i64, i64)> {
    let got = collected.lock().unwrap();
    let (_, batches) = got.last().unwrap();
    crate::harness::int_pairs(batches)
}

/// User 2 is seen at 1 s, then not until 16 s: with a 10-second TTL, the watermark of 15 s
/// (epoch 3) forgets it, so its count starts again in epoch 4; users 1 and 3 are kept. The
/// checkpoint after epoch 2 must carry user 2's stamp (1 s): a restore that stamped it with the
/// restored watermark (9 s) would keep it.
const EPOCHS: [&[(i64, i64)]; 4] = [&[(0, 1), (1, 2)], &[(2, 1), (9, 3)], &[(15, 1)], &[(16, 2)]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_not_updated_for_the_ttl_is_forgotten_also_across_a_restore() {
    for (ttl, want) in [
        ("", vec![(2, 2)]),
        (", 'state_ttl' '10 seconds'", vec![(2, 1)]),
    ] {
        let (mut job, collected) = job(&sql(ttl), None).await;
        for n in 1..=4 {
            job.run_epoch(input(&EPOCHS, n)).await.unwrap();
        }
        assert_eq!(last_upserts(&collected), want, "ttl {ttl:?}");
        let expired = job.summary().groups_expired;
        assert_eq!(expired, u64::from(!ttl.is_empty()), "ttl {ttl:?}");
    }
    // Two epochs, a checkpoint, a new process restoring it, the rest: the same answer.
    let dir = tempfile::tempdir().unwrap();
    let ttl = sql(", 'state_ttl' '10 seconds'");
    let (mut first, _) = job(&ttl, Some(dir.path())).await;
    for n in 1..=2 {
        first.run_epoch(input(&EPOCHS, n)).await.unwrap();
    }
    drop(first);
    let (mut second, collected) = job(&ttl, Some(dir.path())).await;
    assert_eq!(second.epoch(), 2, "restored the checkpoint of epoch 2");
    for n in 3..=4 {
        second.run_epoch(input(&EPOCHS, n)).await.unwrap();
    }
    assert_eq!(last_upserts(&collected), vec![(2, 1)]);
}

#[tokio::test]
async fn state_ttl_needs_a_keyed_aggregate_and_event_time() {
    let refusal =
        |sql: String| async move { crate::harness::refusal(&sql).await.unwrap_or_default() };
    let windowed = "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'data/clicks.csv'
         OPTIONS ('watermark' 'ts');
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('state_ttl' '1 hour');
         INSERT INTO out SELECT date_bin(INTERVAL '1 minute', ts) AS w, count(*) AS n FROM clicks GROUP BY 1;";
    let err = refusal(windowed.to_string()).await;
    assert!(
        err.contains("'state_ttl'") && err.contains("has none"),
        "{err}"
    );
    let no_watermark = sql(", 'state_ttl' '1 hour'").replace("OPTIONS ('watermark' 'ts')", "");
    let err = refusal(no_watermark).await;
    assert!(
        err.contains("counts event time, but source 'clicks' has no watermark"),
        "{err}"
    );
}

#[tokio::test]
async fn a_keyed_aggregate_over_an_event_time_bucket_is_flagged() {
    let p = pipeline(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL) STORED AS CSV LOCATION 'data/clicks.csv';
         CREATE EXTERNAL TABLE out STORED AS BLACKHOLE LOCATION 'x' OPTIONS ('merge_key' 'user_id, day');
         INSERT INTO out SELECT user_id, CAST(ts AS DATE) AS day, count(*) AS n FROM clicks GROUP BY 1, 2;",
    )
    .await;
    let plans = crate::harness::plans(&p).await;
    let text = volley_sql::stream::explain::explain_query(&plans[0], &|_| None);
    assert!(
        text.contains("warning: GROUP BY")
            && text.contains("buckets event time ('ts' of 'clicks') but is not a window")
            && text.contains("state_ttl"),
        "{text}"
    );
}

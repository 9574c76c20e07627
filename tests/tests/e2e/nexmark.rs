//! The Nexmark pipelines of `benches/nexmark/` give the same output streaming as in batch over
//! the same generated events (a small event count), at several micro-batch sizes.

use volley_engine::driver::BatchSizing;
use volley_engine::verify::InputOrder;

use crate::harness::{assert_exact, parity, pipeline, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_pipelines_stream_equal_to_batch() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/nexmark");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "the Nexmark pipelines are in {dir}");
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("'count' '10000000'", "'count' '20000'");
        let p = pipeline(&text).await;
        let input = rows(&p).await;
        for (seed, sizing) in [
            BatchSizing::Fixed(7),
            BatchSizing::Fixed(8192),
            BatchSizing::Random {
                min: 1,
                max: 2000,
                seed: 3,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let workers = 1 + seed % 3;
            let report = parity(
                &p,
                &input,
                sizing.clone(),
                InputOrder::InOrder,
                seed as u64,
                workers,
            )
            .await;
            let context = format!("{}: {sizing:?}, {workers} workers", file.display());
            assert_exact(&report, &context);
            assert!(
                report.sinks.iter().all(|s| s.total > 0),
                "{context}: every sink got rows: {report:?}"
            );
        }
    }
}

/// The stateful Nexmark pipelines of issue-era operators (q9's as-of ranked join, q11's
/// sessions, q18's and q19's Top-N) fail mid-run, restore on other worker counts and still
/// equal batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranked_joins_sessions_and_top_n_restore_and_equal_batch() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/nexmark");
    for (query, source) in [
        ("q9", "bid"),
        ("q11", "bid"),
        ("q18", "bid"),
        ("q19", "bid"),
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{query}.sql"))
            .unwrap()
            .replace("'count' '10000000'", "'count' '6000'")
            .replace("'max_rows' '65536'", "'max_rows' '300'");
        let schedules = [(vec![1500, 3500], 2, vec![2, 1, 3])];
        crate::recovery::failed_runs_restore_and_match_batch(&text, source, &[query], &schedules)
            .await;
    }
}

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

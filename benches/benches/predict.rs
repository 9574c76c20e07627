//! The model runtime against the bare `ort` session: `Model::predict` over four Arrow columns
//! (cast, pack into one `[rows, 4]` f32 tensor, run, Arrow result) versus `session.run` on an
//! already packed tensor, with the fraud MLP on the tract backend, batch sizes 1 to 8192.
//!
//! Run: `cargo bench -p volley-benches --bench predict`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ort::session::Session;
use ort::value::Tensor;
use volley_udfs::model::{Backend, Model, ModelOptions, environment, pack_rows};

fn columns(rows: usize) -> Vec<ArrayRef> {
    (0..4)
        .map(|c| {
            let values: Vec<f64> = (0..rows)
                .map(|i| ((i * 31 + c * 7) % 97) as f64 / 9.0)
                .collect();
            Arc::new(Float64Array::from(values)) as ArrayRef
        })
        .collect()
}

fn predict(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/fraud.onnx");
    let options = ModelOptions {
        threads: Some(1),
        ..ModelOptions::default()
    };
    let model = Model::load("fraud", &path, &options).unwrap();
    let env = environment(Backend::Tract).unwrap();
    let mut session = Session::builder(env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(&path)
        .unwrap();
    let mut group = c.benchmark_group("predict_fraud_tract");
    for rows in [1usize, 64, 1024, 8192] {
        let input = columns(rows);
        let packed = pack_rows(&input).unwrap();
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(
            BenchmarkId::new("model_predict", rows),
            &input,
            |b, cols| {
                b.iter(|| model.predict(cols).unwrap());
            },
        );
        group.bench_with_input(BenchmarkId::new("session_run", rows), &packed, |b, data| {
            b.iter(|| {
                let tensor = Tensor::<f32>::from_array(([rows, 4usize], data.clone())).unwrap();
                let out = session.run(ort::inputs!["features" => tensor]).unwrap();
                let (_, scores) = out["score"].try_extract_tensor::<f32>().unwrap();
                scores.len()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, predict);
criterion_main!(benches);

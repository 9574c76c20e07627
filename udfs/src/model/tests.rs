//! `Model` against ONNX Runtime's own outputs for the same inputs (`reference.json`, written
//! by `examples/fraud/build_model.py` with Python onnxruntime).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, StringArray,
    StructArray,
};
use serde_json::Value;

use super::*;

pub(super) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(super) fn reference() -> Value {
    let text = std::fs::read_to_string(repo().join("udfs/tests/data/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The reference inputs as four columns of different numeric types.
pub(super) fn columns(reference: &Value) -> Vec<ArrayRef> {
    let rows = reference["inputs"].as_array().unwrap();
    let value = |i: usize| -> Vec<f64> { rows.iter().map(|r| r[i].as_f64().unwrap()).collect() };
    let whole = |i: usize| -> Vec<i64> { value(i).into_iter().map(|v| v as i64).collect() };
    vec![
        Arc::new(Float64Array::from(value(0))),
        Arc::new(Int64Array::from(whole(1))),
        Arc::new(Float64Array::from(value(2))),
        Arc::new(Int64Array::from(whole(3))),
    ]
}

/// Row-major values of a reference output.
pub(super) fn expected(reference: &Value, model: &str, output: &str) -> Vec<f32> {
    reference[model][output]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

pub(super) fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-6, "{what}: max difference {worst}");
}

pub(super) fn load(name: &str, path: &str, max_rows: usize) -> Model {
    let options = ModelOptions {
        max_rows,
        ..ModelOptions::default()
    };
    Model::load(name, &repo().join(path), &options).unwrap()
}

#[test]
fn one_output_equals_onnx_runtime_whatever_the_split() {
    let reference = reference();
    let want = expected(&reference, "fraud", "score");
    for max_rows in [1, 7, 64, 8192] {
        let model = load("fraud", "examples/fraud/fraud.onnx", max_rows);
        assert_eq!(
            model.sha256(),
            reference["sha256"]["fraud"].as_str().unwrap()
        );
        assert_eq!(model.return_type(), &DataType::Float32);
        let out = model.predict(&columns(&reference)).unwrap();
        let got = out.as_any().downcast_ref::<Float32Array>().unwrap();
        assert_close(got.values(), &want, &format!("max_rows {max_rows}"));
    }
}

#[test]
fn several_outputs_are_a_struct_with_a_fixed_size_list() {
    let reference = reference();
    let model = load("embed", "udfs/tests/data/embed.onnx", 33);
    let out = model.predict(&columns(&reference)).unwrap();
    let fields = out.as_any().downcast_ref::<StructArray>().unwrap();
    let score = fields.column_by_name("score").unwrap();
    let score = score.as_any().downcast_ref::<Float32Array>().unwrap();
    assert_close(
        score.values(),
        &expected(&reference, "embed", "score"),
        "score",
    );
    let embedding = fields.column_by_name("embedding").unwrap();
    let embedding = embedding
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .unwrap();
    assert_eq!(embedding.value_length(), 3);
    let flat = embedding
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap();
    assert_close(
        flat.values(),
        &expected(&reference, "embed", "embedding"),
        "embedding",
    );
}

#[test]
fn wrong_arity_or_type_names_the_model_input() {
    let model = load("fraud", "examples/fraud/fraud.onnx", 8192);
    let err = model
        .check_arguments(&[DataType::Float64, DataType::Float64, DataType::Int64])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model 'fraud'") && err.contains("input 'features' takes 4 values per row"),
        "{err}"
    );
    assert!(err.contains("passes 3"), "{err}");
    let text: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
    let one: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
    let err = model
        .predict(&[Arc::clone(&one), text, Arc::clone(&one), one])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input 'features' takes numbers") && err.contains("value 2"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_model_is_a_load_error() {
    let dir = std::env::temp_dir().join(format!("volley-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.onnx");
    std::fs::write(&path, b"not a model").unwrap();
    let err = Model::load("broken", &path, &ModelOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model 'broken'") && err.contains("is not a model"),
        "{err}"
    );
    let err = Model::load("gone", &dir.join("gone.onnx"), &ModelOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

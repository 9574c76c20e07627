"""Builds the small ONNX models used by the fraud example and by the predict() tests, and
their reference outputs from ONNX Runtime.

- examples/fraud/fraud.onnx: a 4 -> 8 -> 1 MLP (Gemm, Relu, Gemm, Sigmoid) scoring a ride
  request from [amount, hour, distance_km, requests_last_hour]; input "features" [N, 4],
  output "score" [N, 1].
- udfs/tests/data/embed.onnx: two outputs, "score" [N, 1] and "embedding" [N, 3], for the
  struct / fixed-size-list output path.
- udfs/tests/data/lookup.onnx: input "x" [N, 2], output "value" [N, 1] = table[int(x0)] + x1
  over a 16-entry table. A row whose x0 is outside [0, 16) makes the whole call fail (Gather
  index out of bounds) on ONNX Runtime: the model the failure-isolation test uses. (tract
  aborts the process on that input instead of reporting an error, so the test runs on
  ONNX Runtime.)
- udfs/tests/data/slow.onnx: input "x" [N, 1], output "value" [N, 1] = 1024 * x^2, computed
  the slow way: each row is expanded to a 1024 x 1024 matrix that is multiplied by itself
  (1.1 G multiply-adds per row, no weights stored). The model the timeout test uses.
- udfs/tests/data/reference.json: fixed inputs and ONNX Runtime's outputs for the first two.

Weights come from numpy's default_rng(7), so the files are reproducible.
Usage: python examples/fraud/build_model.py   (needs onnx, numpy, onnxruntime)
"""

import hashlib
import json
import os

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPSET = 17


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="volley")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def fraud(rng, path):
    w1 = rng.standard_normal((4, 8)).astype(np.float32) * 0.5
    b1 = rng.standard_normal((8,)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((8, 1)).astype(np.float32)
    b2 = rng.standard_normal((1,)).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2")]]
    nodes = [
        helper.make_node("Gemm", ["features", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "b2"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    save(graph, path)


def embed(rng, path):
    w1 = rng.standard_normal((4, 3)).astype(np.float32) * 0.5
    b1 = rng.standard_normal((3,)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((3, 1)).astype(np.float32)
    b2 = rng.standard_normal((1,)).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2")]]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["embedding"]),
        helper.make_node("Gemm", ["embedding", "W2", "b2"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3]),
        ],
        initializer=inits,
    )
    save(graph, path)


def lookup(path):
    table = (np.arange(16, dtype=np.float32) * 0.5).reshape(16)
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "start"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Slice", ["x", "start", "one", "axis"], ["x0"]),
        helper.make_node("Slice", ["x", "one", "two", "axis"], ["x1"]),
        helper.make_node("Cast", ["x0"], ["i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["i", "flat"], ["idx"]),
        helper.make_node("Gather", ["table", "idx"], ["g"], axis=0),
        helper.make_node("Unsqueeze", ["g", "axis"], ["g2"]),
        helper.make_node("Add", ["g2", "x1"], ["value"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    save(graph, path)


def slow(path, size=1024):
    inits = [
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1, size, size], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis2"], ["x3"]),
        helper.make_node("Expand", ["x3", "shape"], ["square"]),
        helper.make_node("MatMul", ["square", "square"], ["product"]),
        helper.make_node("ReduceMean", ["product"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["value"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    save(graph, path)


def reference(path, inputs):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: inputs})
    return {o.name: v.tolist() for o, v in zip(session.get_outputs(), outputs)}


def main():
    rng = np.random.default_rng(7)
    fraud_path = os.path.join(ROOT, "examples", "fraud", "fraud.onnx")
    embed_path = os.path.join(ROOT, "udfs", "tests", "data", "embed.onnx")
    fraud(rng, fraud_path)
    embed(rng, embed_path)
    lookup(os.path.join(ROOT, "udfs", "tests", "data", "lookup.onnx"))
    slow(os.path.join(ROOT, "udfs", "tests", "data", "slow.onnx"))
    inputs = np.column_stack(
        [
            rng.uniform(1, 200, 100),  # amount
            rng.integers(0, 24, 100),  # hour
            rng.uniform(0, 30, 100),  # distance_km
            rng.integers(0, 20, 100),  # requests_last_hour
        ]
    ).astype(np.float32)
    out = {
        "onnxruntime": onnxruntime.__version__,
        "inputs": inputs.tolist(),
        "fraud": reference(fraud_path, inputs),
        "embed": reference(embed_path, inputs),
        "sha256": {
            "fraud": hashlib.sha256(open(fraud_path, "rb").read()).hexdigest(),
            "embed": hashlib.sha256(open(embed_path, "rb").read()).hexdigest(),
        },
    }
    with open(os.path.join(ROOT, "udfs", "tests", "data", "reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)
        f.write("\n")
    print(f"wrote {fraud_path}, {embed_path} and reference.json (onnxruntime {onnxruntime.__version__})")


if __name__ == "__main__":
    main()

"""Small ONNX models built with onnx.helper, for tests that need exact, known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]

_TYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def add_constant(
    path: Path, value: float, *, inp="x", out="y", shape=("N", 4), pad_bytes: int = 0
) -> Path:
    """out = inp + value, float32, with a symbolic batch dimension. ``pad_bytes``: an unused
    weight that makes the file that much larger (a download worth cutting)."""
    const = numpy_helper.from_array(np.array(value, dtype=np.float32), "c")
    pad = [numpy_helper.from_array(np.full(pad_bytes // 4, value, np.float32), "pad")]
    graph = helper.make_graph(
        [helper.make_node("Add", [inp, "c"], [out])],
        f"add{value}",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape))],
        initializer=[const, *(pad if pad_bytes else [])],
    )
    return _save(graph, path)


def scale(path: Path, factor: float, *, inp="y", out="z", shape=("N", 4)) -> Path:
    """out = inp * factor, float32."""
    const = numpy_helper.from_array(np.array(factor, dtype=np.float32), "f")
    graph = helper.make_graph(
        [helper.make_node("Mul", [inp, "f"], [out])],
        f"scale{factor}",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape))],
        initializer=[const],
    )
    return _save(graph, path)


def identity(path: Path, dtype: np.dtype, shape=("N", 3), name="x") -> Path:
    t = _TYPES[np.dtype(dtype)]
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], ["out"])],
        "identity",
        [helper.make_tensor_value_info(name, t, list(shape))],
        [helper.make_tensor_value_info("out", t, list(shape))],
    )
    return _save(graph, path)


def reshape_to_2x2(path: Path) -> Path:
    """Takes any 1-D float32 vector; onnxruntime raises unless it has exactly 4 values."""
    target = numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        initializer=[target],
    )
    return _save(graph, path)


def two_inputs(path: Path) -> Path:
    """sum = a + b (float32 [N,2]) and total = its sum over axis 1, as two outputs."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("ReduceSum", ["sum", "axes"], ["total"], keepdims=0),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


# The YOLOv8n-shaped model's file digest: the same seed, opset and IR version must give
# the same bytes, so a change in how the model is built (or serialised) shows here.
YOLOV8N_SHAPED_SHA256 = "ecf3bf36efa99436a61bc6369a0e6d4e21d33832cfcef15fb85bd3ecc2fcebdb"


def yolov8n_shaped(path: Path, seed: int = 8, dynamic_batch: bool = False, size: int = 640) -> Path:
    """A model with YOLOv8n's signature: ``images`` float32 [1,3,640,640] in, ``output0``
    float32 [1,84,8400] out (4 box values and 80 class scores for 80x80 + 40x40 + 20x20
    anchors), made of three patchifying convolutions with fixed random weights, one per
    detection scale, as YOLOv8's head has. Not trained: for shapes, sizes and exact
    answers, not for detections. ``dynamic_batch``: the batch dimension is ``N``.
    ``size`` (a multiple of 32): a square input of that side, the same layers."""
    rng = np.random.default_rng(seed)
    nodes, inits, parts = [], [], []
    for stride in (8, 16, 32):
        w = rng.normal(0.0, 0.05, (84, 3, stride, stride)).astype(np.float32)
        bias = rng.normal(0.0, 0.5, (84,)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{stride}"),
            numpy_helper.from_array(bias, f"b{stride}"),
        ]
        nodes.append(
            helper.make_node(
                "Conv",
                ["images", f"w{stride}", f"b{stride}"],
                [f"c{stride}"],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Reshape", [f"c{stride}", "flat"], [f"r{stride}"]))
        parts.append(f"r{stride}")
    # Reshape's 0 copies the batch dimension from its input.
    flat = [0 if dynamic_batch else 1, 84, -1]
    inits.append(numpy_helper.from_array(np.array(flat, dtype=np.int64), "flat"))
    batch: int | str = "N" if dynamic_batch else 1
    anchors = sum((size // stride) ** 2 for stride in (8, 16, 32))
    nodes.append(helper.make_node("Concat", parts, ["output0"], axis=2))
    graph = helper.make_graph(
        nodes,
        "yolov8n-shaped",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 84, anchors])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="edgepipe-tests")
    model.ir_version = 8
    model.producer_version = "1"
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def mlp(path: Path, width: int = 2048, layers: int = 4, seed: int = 0) -> Path:
    """A dense model, ``x`` float32 [N, width] -> ``y`` [N, width], ``layers`` MatMul+Relu
    with fixed random weights (``width``² x ``layers`` x 4 bytes of them). One row at a
    time reads every weight once per call, so calls are memory-bound: the case where
    batching rows into one call pays most."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = (rng.normal(0.0, 1.0, (width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        initializer=inits,
    )
    return _save(graph, path)


def fails_at_run(path: Path) -> Path:
    """Declares x float32 [N, 4] like add_constant, but reshapes to [3, -1], which no
    multiple of 4 values fits: onnxruntime loads it and raises on every call."""
    target = numpy_helper.from_array(np.array([3, -1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "fails",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "M"])],
        initializer=[target],
    )
    return _save(graph, path)


def sqrt_of_difference(path: Path, c: float) -> Path:
    """y = sqrt(c - x), float32 [N, 4]: finite for x <= c, NaN above (a model that answers
    a smoke test's small sample but breaks on real inputs)."""
    const = numpy_helper.from_array(np.array(c, dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Sub", ["c", "x"], ["d"]), helper.make_node("Sqrt", ["d"], ["y"])],
        f"sqrt{c}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[const],
    )
    return _save(graph, path)

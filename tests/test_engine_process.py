"""The engine as a real process on a real port: the HTTP contract and every bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from tests.helpers.engine_http import ARROW, JSON, arrow_table_bytes, get, post
from tests.helpers.engines import EngineFactory

# -- yolov8n ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo_engine(start_engine: EngineFactory, yolov8n_path: Path):
    return start_engine("--model", str(yolov8n_path), env={"CONFIG_CPUS": "2"})


def test_yolov8n_json(yolo_engine, yolov8n_path: Path) -> None:
    status, body = get(yolo_engine.url + "/pipelines")
    assert status == 200 and orjson.loads(body) == {
        "pipelines": [{"id": "yolov8n", "status": "Running"}]
    }
    (model,) = orjson.loads(get(yolo_engine.url + "/models")[1])["models"]
    import hashlib

    assert model["name"] == "yolov8n" and model["status"] == "Running"
    assert model["sha"] == hashlib.sha256(yolov8n_path.read_bytes()).hexdigest()
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", model["version"]
    )

    x = np.random.default_rng(1).random((1, 3, 640, 640), dtype=np.float32)
    records = EngineClient(yolo_engine.url).infer_records("yolov8n", [{"images": x}])
    (rec,) = records
    assert set(rec) == {
        "check_failures",
        "elapsed",
        "model_name",
        "model_version",
        "original_data",
        "outputs",
        "pipeline_name",
        "shadow_data",
        "time",
    }
    assert rec["pipeline_name"] == "yolov8n" and rec["model_name"] == "yolov8n"
    assert rec["model_version"] == model["version"]
    assert rec["check_failures"] == [] and rec["shadow_data"] == {}
    assert rec["original_data"] is None  # 13 MB is above the echo limit
    assert len(rec["elapsed"]) == 2 and all(isinstance(e, int) and e > 0 for e in rec["elapsed"])
    (out,) = rec["outputs"]
    assert list(out) == ["Float"]
    assert out["Float"]["dim"] == [1, 84, 8400] and out["Float"]["v"] == 1
    assert len(out["Float"]["data"]) == 84 * 8400
    # Same answer as onnxruntime in-process.
    import onnxruntime as ort

    direct = ort.InferenceSession(str(yolov8n_path)).run(None, {"images": x})[0]
    np.testing.assert_allclose(outputs_of(rec)[0], direct, rtol=1e-4, atol=1e-4)


def test_yolov8n_flat_list_is_reshaped(yolo_engine) -> None:
    x = np.random.default_rng(2).random(3 * 640 * 640, dtype=np.float32)
    (rec,) = EngineClient(yolo_engine.url).infer_records("yolov8n", [{"images": x}])
    assert rec["outputs"][0]["Float"]["dim"] == [1, 84, 8400]


def test_yolov8n_arrow_both_ways(yolo_engine, yolov8n_path: Path) -> None:
    hwc = np.random.default_rng(3).random((1, 640, 640, 3), dtype=np.float32)
    chw = hwc.transpose(0, 3, 1, 2)  # HWC image viewed as CHW: written with a permutation
    body = arrow_table_bytes(pa.table({"images": pa.FixedShapeTensorArray.from_numpy_ndarray(chw)}))
    status, ctype, raw = post(yolo_engine.url + "/pipelines/yolov8n", body, ARROW, ARROW)
    assert status == 200 and ctype == ARROW
    table = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
    assert table.num_rows == 1
    assert {
        "time",
        "pipeline_name",
        "model_name",
        "model_version",
        "elapsed",
        "check_failures",
        "out.output0",
    } <= set(table.column_names)
    out = table.column("out.output0").chunk(0).to_numpy_ndarray()
    import onnxruntime as ort

    direct = ort.InferenceSession(str(yolov8n_path)).run(
        None, {"images": np.ascontiguousarray(chw)}
    )[0]
    np.testing.assert_allclose(out[0], direct, rtol=1e-4, atol=1e-4)
    # Arrow in, JSON out (the default Accept).
    status, ctype, raw = post(yolo_engine.url + "/pipelines/yolov8n", body, ARROW)
    assert status == 200 and ctype == JSON
    np.testing.assert_allclose(outputs_of(orjson.loads(raw)[0])[0], direct, rtol=1e-4, atol=1e-4)


# -- pipelines of small models ------------------------------------------------------------


def step(name: str, path: Path, batch: str = "single", fields: list[str] | None = None) -> dict:
    s = {"model": {"name": name, "path": str(path)}, "batchConfig": batch}
    if fields:
        s["tensorFields"] = fields
    return s


@pytest.fixture(scope="module")
def two_step(start_engine: EngineFactory, models_dir: Path):
    config = {
        "name": "chain",
        "steps": [
            step("add1", models_dir / "add1.onnx"),
            step("double", models_dir / "double.onnx"),
        ],
    }
    return start_engine(config=config)


def test_two_step_pipeline_feeds_outputs_forward(two_step) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    status, _, raw = post(two_step.url + "/pipelines/chain", orjson.dumps([{"x": x.tolist()}]))
    assert status == 200, raw
    (rec,) = orjson.loads(raw)
    assert len(rec["elapsed"]) == 3
    assert rec["model_name"] == "double"
    np.testing.assert_array_equal(outputs_of(rec)[0], (x + 1) * 2)
    assert rec["original_data"] == {"x": x.tolist()}  # small bodies are echoed


def test_batch_and_single_give_the_same_rows(start_engine: EngineFactory, models_dir) -> None:
    rows = [{"x": np.full((1, 4), i, dtype=np.float32)} for i in range(5)]
    answers = {}
    for mode in ("single", "batch"):
        engine = start_engine(
            config={"name": f"add-{mode}", "steps": [step("add1", models_dir / "add1.onnx", mode)]}
        )
        recs = EngineClient(engine.url).infer_records(f"add-{mode}", rows)
        assert len(recs) == 5
        answers[mode] = [outputs_of(r)[0] for r in recs]
        for i, out in enumerate(answers[mode]):
            assert out.shape == (1, 4)
            np.testing.assert_array_equal(out, np.full((1, 4), i + 1))
        elapsed = [r["elapsed"][1] for r in recs]
        if mode == "batch":
            assert len(set(elapsed)) == 1  # one model call shared by all rows
    for a, b in zip(answers["single"], answers["batch"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_inputs_two_outputs_with_tensor_fields(start_engine, models_dir) -> None:
    engine = start_engine(
        config={
            "name": "two",
            "steps": [step("two", models_dir / "two.onnx", fields=["left", "right"])],
        }
    )
    body = orjson.dumps([{"left": [[1, 2]], "right": [[10, 20]], "note": "ignored"}])
    status, _, raw = post(engine.url + "/pipelines/two", body)
    assert status == 200, raw
    outs = orjson.loads(raw)[0]["outputs"]
    assert outs[0]["Float"] == {"data": [11.0, 22.0], "dim": [1, 2], "v": 1}
    assert outs[1]["Float"] == {"data": [33.0], "dim": [1], "v": 1}


@pytest.mark.parametrize(
    ("kind", "value", "type_key"),
    [
        ("f64", [[1.5, 2, 3]], "Double"),
        ("i32", [[1, 2, 3]], "Int32"),
        ("i64", [[1, 2, 3]], "Int64"),
        ("u8", [[1, 2, 255]], "Uint8"),
        ("b", [[True, False, True]], "Bool"),
    ],
)
def test_dtypes_follow_the_model(start_engine, models_dir, kind, value, type_key) -> None:
    engine = start_engine("--model", str(models_dir / f"id_{kind}.onnx"))
    status, _, raw = post(f"{engine.url}/pipelines/id-{kind}", orjson.dumps([{"x": value}]))
    assert status == 200, raw
    out = orjson.loads(raw)[0]["outputs"][0]
    assert list(out) == [type_key]
    assert out[type_key]["data"] == [v for row in value for v in row]


# -- bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_engine(start_engine: EngineFactory, models_dir: Path):
    return start_engine(
        config={"name": "add", "steps": [step("add1", models_dir / "add1.onnx")]},
        env={"EDGEPIPE_ENGINE_MAX_BODY_BYTES": "100000"},
    )


GOOD = orjson.dumps([{"x": [[1, 2, 3, 4]]}])


@pytest.mark.parametrize(
    ("path", "body", "ctype", "status", "field"),
    [
        ("/pipelines/add", b"[{", JSON, 400, "body"),
        ("/pipelines/add", b'[{"y": [[1,2,3,4]]}]', JSON, 400, "x"),
        ("/pipelines/add", b'[{"x": [[1,2,3]]}]', JSON, 400, "x"),  # wrong shape
        ("/pipelines/add", b'[{"x": [[1,2,3,4],[5]]}]', JSON, 400, "x"),  # ragged
        ("/pipelines/add", b'[{"x": [["a","b","c","d"]]}]', JSON, 400, "x"),  # dtype
        ("/pipelines/add", b'[{"x": [[true,false,true,false]]}]', JSON, 400, "x"),
        ("/pipelines/add", b'[{"x": [[1e39,1,1,1]]}]', JSON, 400, "x"),  # inf as float32
        ("/pipelines/add", b'[{"x": [[NaN,1,1,1]]}]', JSON, 400, "body"),
        ("/pipelines/nope", GOOD, JSON, 404, "pipeline"),
        ("/pipelines/add", b"[" + b"1," * 60000 + b"1]", JSON, 413, "body"),
        ("/pipelines/add", GOOD, "text/csv", 415, "Content-Type"),
        ("/pipelines/add", b"", JSON, 400, "body"),
        ("/pipelines/add", b"not arrow", ARROW, 400, "body"),
    ],
)
def test_bad_input_gets_status_and_field_then_good_request_works(
    small_engine, path, body, ctype, status, field
) -> None:
    got, rtype, raw = post(small_engine.url + path, body, ctype)
    assert got == status, raw
    assert rtype.startswith("application/json")
    err = orjson.loads(raw)
    assert err["field"] == field and isinstance(err["error"], str) and err["error"]
    ok, _, raw = post(small_engine.url + "/pipelines/add", GOOD)
    assert ok == 200 and outputs_of(orjson.loads(raw)[0])[0].tolist() == [[2, 3, 4, 5]]


def test_nan_in_arrow_is_400(small_engine) -> None:
    table = pa.table(
        {"x": pa.array([[[float("nan"), 1, 2, 3]]], type=pa.list_(pa.list_(pa.float32())))}
    )
    status, _, raw = post(small_engine.url + "/pipelines/add", arrow_table_bytes(table), ARROW)
    assert status == 400 and b"NaN" in raw


def test_unknown_route_and_accept(small_engine) -> None:
    status, _ = get(small_engine.url + "/nothing-here")
    assert status == 404
    status, _, raw = post(small_engine.url + "/pipelines/add", GOOD, JSON, "text/html")
    assert status == 406 and orjson.loads(raw)["field"] == "Accept"


def test_model_failure_is_500_and_the_next_request_succeeds(start_engine, models_dir) -> None:
    engine = start_engine("--model", str(models_dir / "reshape.onnx"))
    status, _, raw = post(engine.url + "/pipelines/reshape", orjson.dumps([{"x": [1, 2, 3]}]))
    assert status == 500
    assert "reshape" in orjson.loads(raw)["error"]
    status, _, raw = post(engine.url + "/pipelines/reshape", orjson.dumps([{"x": [1, 2, 3, 4]}]))
    assert status == 200
    assert orjson.loads(raw)[0]["outputs"][0]["Float"]["dim"] == [2, 2]


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_broken_model_reports_error_not_crash(start_engine, models_dir, tmp_path, problem) -> None:
    path = tmp_path / "broken.onnx"
    if problem == "corrupt":
        path.write_bytes(b"\x08\x07garbage that is not a model")
    engine = start_engine(config={"name": "broken", "steps": [step("m", path)]}, wait_ready=False)
    engine.wait_for("/health/live", 200)
    assert get(engine.url + "/health/ready")[0] == 503
    assert orjson.loads(get(engine.url + "/pipelines")[1]) == {
        "pipelines": [{"id": "broken", "status": "Error"}]
    }
    status, _, raw = post(engine.url + "/pipelines/broken", GOOD)
    assert status == 503 and orjson.loads(raw)["field"] == "pipeline"
    assert engine.proc.poll() is None  # still serving, not crash-looping
    assert ("cannot read" if problem == "missing" else "cannot load") in engine.log()


def test_metrics_count_what_was_sent(start_engine, models_dir) -> None:
    engine = start_engine("--model", str(models_dir / "add1.onnx"))
    for _ in range(3):
        assert post(engine.url + "/pipelines/add1", GOOD)[0] == 200
    for _ in range(2):
        assert post(engine.url + "/pipelines/add1", b"[{")[0] == 400
    assert post(engine.url + "/pipelines/ghost", GOOD)[0] == 404
    text = get(engine.url + "/metrics")[1].decode()

    def value(pattern: str) -> float:
        m = re.search(pattern + r" ([0-9.e+]+)", text)
        assert m, f"{pattern} not in metrics"
        return float(m.group(1))

    assert value(r'edgepipe_requests_total\{pipeline="add1",status="200"\}') == 3
    assert value(r'edgepipe_requests_total\{pipeline="add1",status="400"\}') == 2
    assert value(r'edgepipe_errors_total\{pipeline="add1",status="400"\}') == 2
    assert value(r'edgepipe_errors_total\{pipeline="_unknown",status="404"\}') == 1
    assert value(r'edgepipe_request_latency_seconds_count\{pipeline="add1"\}') == 5
    assert value(r'edgepipe_step_latency_seconds_count\{pipeline="add1",step="add1"\}') == 3


def test_cli_rejects_bad_settings_and_config(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.engine.cli", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "steps" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.engine.cli", "--model", "x.onnx"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"CONFIG_CPUS": "lots", "PATH": "/usr/bin"},
    )
    # One line, naming the variable and what it takes; no traceback.
    assert proc.returncode != 0
    assert proc.stderr.strip() == "edgepipe-engine: CONFIG_CPUS='lots': expected a number of cores"


def test_sigterm_drains_then_finishes_in_flight_requests(start_engine, models_dir: Path) -> None:
    """On SIGTERM: readiness fails at once, requests are still answered while draining,
    then the port closes and the process exits cleanly."""
    import signal
    import threading
    import time

    engine = start_engine(
        "--model", str(models_dir / "add1.onnx"), env={"EDGEPIPE_ENGINE_DRAIN_SECONDS": "2"}
    )
    body = orjson.dumps([{"x": [1.0, 2.0, 3.0, 4.0]}])
    url = engine.url + "/pipelines/add1"
    assert post(url, body)[0] == 200
    answers: list[int] = []

    def keep_asking() -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            answers.append(post(url, body)[0])
            time.sleep(0.05)

    client = threading.Thread(target=keep_asking)
    client.start()
    time.sleep(0.2)
    engine.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    status, raw = get(engine.url + "/health/ready")
    assert status == 503 and orjson.loads(raw)["reason"] == "shutting down"
    client.join()
    assert answers and set(answers) == {200}  # nothing dropped while draining
    assert engine.proc.wait(15) == 0
    assert "finishing requests in flight" in engine.log()

"""Validations, shadow models and the A/B split, against the engine as a real process."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pyarrow as pa
import pytest

from tests.helpers import onnx_models as m
from tests.helpers.engine_http import JSON, arrow_table_bytes, get, post
from tests.helpers.engines import EngineFactory

ARROW = "application/vnd.apache.arrow.file"


@pytest.fixture(scope="module")
def models(models_dir: Path, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("exp")
    return {
        "add1": models_dir / "add1.onnx",
        "add5": m.add_constant(d / "add5.onnx", 5.0),
        "double": m.scale(d / "double.onnx", 2.0, inp="x", out="y"),
        # Takes [N, 4] like add1, and raises on every call.
        "broken": m.fails_at_run(d / "broken.onnx"),
    }


def record(raw: bytes) -> list[dict]:
    return orjson.loads(raw)


def test_validations_fire_on_the_right_rows_in_json_and_arrow(
    start_engine: EngineFactory, models
) -> None:
    engine = start_engine(
        config={
            "name": "checked",
            "steps": [{"model": {"name": "add1", "path": str(models["add1"])}}],
            "validations": [
                {"name": "positive", "expr": "all(y > 0)"},
                {"name": "small", "expr": "max(y) < 10"},
            ],
        }
    )
    rows = [[[1, 2, 3, 4]], [[-5, 1, 1, 1]], [[1, 2, 3, 20]], [[-9, 0, 0, 30]]]
    status, _, raw = post(
        engine.url + "/pipelines/checked", orjson.dumps([{"x": r} for r in rows]), JSON
    )
    assert status == 200, raw
    got = [rec["check_failures"] for rec in record(raw)]
    assert got == [[], ["positive"], ["small"], ["positive", "small"]]
    table = pa.table({"x": pa.array([r[0] for r in rows], type=pa.list_(pa.float32()))})
    status, _, raw = post(
        engine.url + "/pipelines/checked", arrow_table_bytes(table), ARROW, accept=ARROW
    )
    assert status == 200, raw
    answer = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
    assert answer.column("check_failures").to_pylist() == got
    metrics = get(engine.url + "/metrics")[1].decode()
    assert re.search(
        r'edgepipe_validation_failures_total\{pipeline="checked",validation="positive"\} 4\.0',
        metrics,
    )


def test_shadows_answer_beside_the_model_and_a_failing_one_changes_nothing(
    start_engine: EngineFactory, models
) -> None:
    engine = start_engine(
        config={
            "name": "shadowed",
            "steps": [
                {
                    "model": {"name": "add1", "path": str(models["add1"])},
                    "shadows": [
                        {"name": "double", "path": str(models["double"])},
                        {"name": "add5", "path": str(models["add5"])},
                    ],
                }
            ],
        }
    )
    x = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    status, _, raw = post(
        engine.url + "/pipelines/shadowed",
        orjson.dumps([{"x": x}], option=orjson.OPT_SERIALIZE_NUMPY),
        JSON,
    )
    assert status == 200, raw
    (rec,) = record(raw)
    np.testing.assert_array_equal(
        np.asarray(rec["outputs"][0]["Float"]["data"], np.float32).reshape(3, 4), x + 1
    )
    for name in ("double", "add5"):
        session = ort.InferenceSession(str(models[name]))
        (want,) = session.run(None, {"x": x})
        (tensor,) = rec["shadow_data"][name]
        np.testing.assert_array_equal(
            np.asarray(tensor["Float"]["data"], np.float32).reshape(3, 4), want
        )
    # In Arrow: a column per shadow output.
    table = pa.table({"x": pa.array(list(x), type=pa.list_(pa.float32()))})
    status, _, raw = post(
        engine.url + "/pipelines/shadowed", arrow_table_bytes(table), ARROW, accept=ARROW
    )
    answer = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
    np.testing.assert_array_equal(
        np.stack(answer.column("shadow_data.double.y").to_numpy(zero_copy_only=False)), x * 2
    )


def test_a_failing_shadow_leaves_the_answer_intact(start_engine: EngineFactory, models) -> None:
    engine = start_engine(
        config={
            "name": "risky",
            "steps": [
                {
                    "model": {"name": "add1", "path": str(models["add1"])},
                    "shadows": [{"name": "broken", "path": str(models["broken"])}],
                }
            ],
        },
    )
    for _ in range(3):
        status, _, raw = post(engine.url + "/pipelines/risky", b'[{"x": [[1, 2, 3, 4]]}]', JSON)
        assert status == 200, raw
        (rec,) = record(raw)
        assert rec["outputs"][0]["Float"]["data"] == [2, 3, 4, 5] and rec["shadow_data"] == {}
    metrics = get(engine.url + "/metrics")[1].decode()
    assert (
        'edgepipe_shadow_calls_total{model="broken",outcome="error",pipeline="risky"} 3.0'
        in metrics
    )


def split_config(models, header: str | None = None) -> dict:
    split = {
        "weight": 3,
        "variants": [{"model": {"name": "add5", "path": str(models["add5"])}, "weight": 1}],
    }
    if header:
        split["header"] = header
    return {
        "name": "ab",
        "steps": [{"model": {"name": "add1", "path": str(models["add1"])}, "split": split}],
    }


def test_the_split_holds_its_weights_over_2000_requests(
    start_engine: EngineFactory, models
) -> None:
    engine = start_engine(config=split_config(models))
    url = engine.url + "/pipelines/ab"

    def one(_: int) -> str:
        status, _, raw = post(url, b'[{"x": [[0, 0, 0, 0]]}]', JSON)
        assert status == 200, raw
        (rec,) = record(raw)
        value = rec["outputs"][0]["Float"]["data"][0]
        # The answer names the variant that answered, and its output is that model's.
        assert (rec["model_name"], value) in (("add1", 1.0), ("add5", 5.0)), rec
        return rec["model_name"]

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(one, range(2000)))
    share = names.count("add1") / len(names)
    # p = 0.75, n = 2000: sd = 0.0097; five of them either way.
    assert abs(share - 0.75) < 5 * 0.0097, share
    metrics = get(engine.url + "/metrics")[1].decode()
    assert (
        f'edgepipe_variant_requests_total{{model="add1",pipeline="ab",step="add1"}} {names.count("add1")}.0'
        in metrics
    )


def test_a_sticky_key_always_gets_one_variant(start_engine: EngineFactory, models) -> None:
    engine = start_engine(config=split_config(models, "X-Camera"))
    url = engine.url + "/pipelines/ab"
    import urllib.request

    seen: dict[str, set[str]] = {}
    for key in [f"camera-{i}" for i in range(40)]:
        for _ in range(5):
            req = urllib.request.Request(
                url, b'[{"x": [[0, 0, 0, 0]]}]', {"Content-Type": JSON, "x-camera": key}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                seen.setdefault(key, set()).add(orjson.loads(resp.read())[0]["model_name"])
    assert all(len(v) == 1 for v in seen.values()), seen
    # Both variants get some of the keys.
    assert {next(iter(v)) for v in seen.values()} == {"add1", "add5"}


def test_variants_and_rules_are_checked_at_load(
    start_engine: EngineFactory, models, models_dir
) -> None:
    engine = start_engine(
        config={
            "name": "bad",
            "steps": [
                {
                    "model": {"name": "add1", "path": str(models["add1"])},
                    "split": {
                        "variants": [
                            {"model": {"name": "two", "path": str(models_dir / "two.onnx")}}
                        ]
                    },
                }
            ],
        },
        wait_ready=False,
    )
    engine.wait_for("/health/ready", 503)
    error = orjson.loads(get(engine.url + "/health/ready")[1])["errors"]["bad"]
    assert error.startswith("steps[0].split.variants[0].model: variant 'two' takes"), error
    engine = start_engine(
        config={
            "name": "rules",
            "steps": [{"model": {"name": "add1", "path": str(models["add1"])}}],
            "validations": [{"name": "r", "expr": "max(nope) > 1"}],
        },
        wait_ready=False,
    )
    engine.wait_for("/health/ready", 503)
    error = orjson.loads(get(engine.url + "/health/ready")[1])["errors"]["rules"]
    assert error == "validations[0].expr: unknown name(s) nope; the outputs are y", error


class SlowModel:
    """A stand-in with OnnxModel's shape: one input, one output, a slow predict."""

    def __init__(self, seconds: float) -> None:
        from types import SimpleNamespace

        self.name = "slow"
        self.inputs = [SimpleNamespace(name="x")]
        self.outputs = [SimpleNamespace(name="y")]
        self.seconds = seconds

    def predict(self, feed):
        import time

        time.sleep(self.seconds)
        return [feed["x"]]


def test_a_slow_shadow_times_out_within_the_bound_and_a_backlog_is_skipped() -> None:
    import time

    from edgepipe.engine.experiments import BACKLOG, Shadows

    shadows = Shadows(1, 0.05)
    try:
        feed = {"x": np.zeros((1, 4), np.float32)}
        t0 = time.perf_counter()
        data, events = shadows.collect(shadows.start([SlowModel(0.5)], [feed]), 1)
        assert time.perf_counter() - t0 < 0.3  # the 50 ms bound, not the shadow's 500 ms
        assert data == [{}] and [e.outcome for e in events] == ["timeout"]
        # More calls than the backlog holds: the rest are skipped, not queued.
        calls = shadows.start([SlowModel(0.2)], [feed] * (BACKLOG + 5))
        _, events = shadows.collect(calls, BACKLOG + 5)
        assert [e.outcome for e in events].count("skipped") >= 5
    finally:
        shadows.close()


def test_most_shadows_timing_out_is_a_warning_once_a_minute(caplog) -> None:
    import logging
    import time

    from edgepipe.engine.experiments import ShadowEvent, TimeoutWatch

    watch = TimeoutWatch("p", 0.1, every_s=0.3)
    late, ok = ShadowEvent("s", "timeout"), ShadowEvent("s", "ok", 0.01)
    with caplog.at_level(logging.WARNING, logger="edgepipe.engine"):
        for _ in range(9):
            watch.note([late])
        assert len(caplog.records) == 1  # at once, then not again within the window
        assert "EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS (100 ms)" in caplog.text
        time.sleep(0.35)
        watch.note([late, late, ok])
        assert len(caplog.records) == 2 and "10 of 11 shadow calls" in caplog.records[1].message
        time.sleep(0.35)
        watch.note([ok, ok, late])  # a minority: no warning
        assert len(caplog.records) == 2


def test_an_engine_whose_shadows_time_out_says_so_in_its_log(
    start_engine: EngineFactory, tmp_path: Path
) -> None:
    main = m.add_constant(tmp_path / "add1w.onnx", 1.0, shape=("N", 1024))
    slow = m.mlp(tmp_path / "slow.onnx", width=1024, layers=4)  # 16 MiB of weights
    engine = start_engine(
        config={
            "name": "late",
            "steps": [
                {
                    "model": {"name": "main", "path": str(main)},
                    "shadows": [{"name": "slow", "path": str(slow)}],
                }
            ],
        },
        env={"EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS": "1"},
    )
    x = np.ones((64, 1024), np.float32).tolist()
    for _ in range(5):
        status, _, raw = post(engine.url + "/pipelines/late", orjson.dumps([{"x": x}]), JSON)
        assert status == 200 and record(raw)[0]["shadow_data"] == {}
    warnings = [line for line in engine.log().splitlines() if "shadow calls" in line]
    assert len(warnings) == 1, engine.log()[-3000:]
    assert "WARNING" in warnings[0] and "EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS (1 ms)" in warnings[0]


def test_a_trained_yolov8s_shadow_answers_within_the_default_timeout(
    start_engine: EngineFactory, trained_yolo_path: Path, astronaut_path: Path
) -> None:
    # Two threads for the model, as on the 2-core machine where the old 100 ms dropped
    # every shadow: the shadow then runs mostly after the model has answered.
    engine = start_engine(
        config={
            "name": "detect",
            "steps": [
                {
                    "model": {"name": "fall", "path": str(trained_yolo_path)},
                    "preprocess": {"kind": "image"},
                    "postprocess": {"kind": "yolov8"},
                    "shadows": [{"name": "fall-b", "path": str(trained_yolo_path)}],
                }
            ],
        },
        env={"CONFIG_CPUS": "2"},
    )
    body = astronaut_path.read_bytes()
    answered = 0
    for _ in range(3):
        status, _, raw = post(engine.url + "/pipelines/detect", body, "image/png")
        assert status == 200, raw
        answered += "fall-b" in record(raw)[0]["shadow_data"]
    assert answered >= 2, f"{answered} of 3 answers carry the shadow's outputs"

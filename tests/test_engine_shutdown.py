"""The engine's prompt exit after SIGTERM, and onnxruntime's telemetry off (engine, library)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.helpers.engine_http import post
from tests.helpers.engines import EngineFactory


def test_sigterm_exit_is_prompt_and_onnxruntime_keeps_no_telemetry(
    start_engine: EngineFactory, models_dir: Path, tmp_path: Path
) -> None:
    """onnxruntime's telemetry, left on, keeps a device ID and an event store under the
    home directory and, where it cannot (the cluster's read-only root), uploads at exit:
    with no DNS answer that held engine pods 10 s after their port closed. The engine turns
    it off: after a served request and a SIGTERM it exits at once, leaving no trace."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp_path / "models"),
        "EDGEPIPE_ENGINE_DRAIN_SECONDS": "0",
    }
    engine = start_engine("--model", str(models_dir / "add1.onnx"), env=env)
    body = orjson.dumps([{"x": [1.0, 2.0, 3.0, 4.0]}])
    assert post(engine.url + "/pipelines/add1", body)[0] == 200
    assert engine.proc is not None
    t0 = time.monotonic()
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(15) == 0
    took = time.monotonic() - t0
    assert "port closed" in engine.log()
    assert took < 3.0, f"SIGTERM -> exit took {took:.1f} s"
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert not [p for p in left if "Microsoft" in p or "onnxruntime" in p], left


def test_the_library_keeps_onnxruntime_telemetry_off(models_dir: Path, tmp_path: Path) -> None:
    """The CLI's model checks (``edgepipe publish``, the operator's model signatures) load
    models with onnxruntime too: with its telemetry off, nothing is left under HOME."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys; from edgepipe import onnxfile, yolo; "
        "onnxfile.signature(sys.argv[1]); yolo.class_names_from_onnx(sys.argv[1])"
    )
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    model = str(models_dir / "add1.onnx")
    subprocess.run([sys.executable, "-c", code, model], env=env, check=True, timeout=60)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []

"""The engine's prompt exit after SIGTERM, and onnxruntime's telemetry off (engine, library)."""

from __future__ import annotations

import http.client
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


def test_keep_alive_clients_are_moved_off_while_draining(
    start_engine: EngineFactory, models_dir: Path
) -> None:
    """A client on a keep-alive connection, sending without pause through the drain: its
    answers while draining close the connection (behind a Service its next one goes to
    another pod), no request is ever cut off when the port closes (only a refused new
    connection, which sent nothing), and the engine exits promptly after."""
    engine = start_engine(
        "--model", str(models_dir / "add1.onnx"), env={"EDGEPIPE_ENGINE_DRAIN_SECONDS": "1"}
    )
    assert engine.proc is not None
    body = orjson.dumps([{"x": [1.0, 2.0, 3.0, 4.0]}])
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    # (phase, status or error, Connection, whether the request opened a new connection)
    seen: list[tuple[str, object, str | None, bool]] = []
    phase, signalled = "serving", 0.0
    while engine.proc.poll() is None and time.monotonic() - (signalled or time.monotonic()) < 10:
        if phase == "serving" and len(seen) >= 20:
            engine.proc.send_signal(signal.SIGTERM)
            phase, signalled = "draining", time.monotonic()
        fresh = conn.sock is None  # http.client reconnects after a "Connection: close"
        try:
            conn.request("POST", "/pipelines/add1", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            seen.append((phase, resp.status, resp.getheader("Connection"), fresh))
        except OSError as exc:
            seen.append((phase, type(exc).__name__, None, fresh))
            conn.close()
            time.sleep(0.01)
    assert engine.proc.wait(15) == 0
    took = time.monotonic() - signalled
    conn.close()
    before = [s for s in seen if s[0] == "serving"]
    assert all(status == 200 and header != "close" for _, status, header, _ in before), before
    during = [s for s in seen if s[0] == "draining"]
    answered = [s for s in during if s[1] == 200]
    assert len(answered) >= 5, during
    # The first answers may precede the signal's handling; every later one closes.
    assert answered[-1][2] == "close" and answered[-5:] == [answered[-1]] * 5, answered[-10:]
    # A new connection made as the port closes may be refused, or reset by the kernel if it
    # was still in the listen backlog (never accepted, its request never read); a request
    # on a connection the engine has answered before is never cut off.
    cut_off = [
        s
        for s in during
        if s[1] not in (200, "ConnectionRefusedError")
        and not (s[3] and s[1] == "ConnectionResetError")
    ]
    assert not cut_off, cut_off
    assert took < 1 + 3.0, f"SIGTERM -> exit took {took:.1f} s with a 1 s drain"

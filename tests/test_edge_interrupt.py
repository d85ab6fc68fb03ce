"""Ctrl-C while an edge engine downloads its model: a real engine process in edge mode
pulls a 64 MiB model from a real registry through a slow link, and SIGINT mid-download
ends it at once with exit status 130, one line and no traceback, and no partial file
left in the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgepipe.localengine import free_port
from tests.helpers import onnx_models as m
from tests.helpers.publishing import edge_env, publish
from tests.helpers.trickle import TrickleProxy


def wait_for_partial(cache: Path, proc: subprocess.Popen, least: int) -> Path:
    """The dot-file a download is writing, once it holds ``least`` bytes."""
    blobs = cache / "blobs" / "sha256"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the engine exited with {proc.returncode}"
        for path in blobs.glob(".*") if blobs.exists() else []:
            try:
                if path.stat().st_size >= least:
                    return path
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    raise TimeoutError("no download in progress within 120 s")


def test_ctrl_c_mid_download_stops_at_once_and_leaves_no_partial_file(
    auth_registry, tmp_path: Path
) -> None:
    model = m.mlp(tmp_path / "big.onnx", width=2048, layers=4, seed=7)  # 64 MiB of weights
    configs = tmp_path / "configs"
    configs.mkdir()
    config = {"name": "big", "steps": [{"model": {"name": "big", "path": str(model)}}]}
    published = publish(config, configs, auth_registry)
    host, port = auth_registry.host.rsplit(":", 1)
    cache = tmp_path / "cache"
    # 8 MiB/s: the model takes 8 s to arrive, so the signal lands mid-download.
    with TrickleProxy((host, int(port)), rate=8 << 20) as proxy:
        env = edge_env({"status": published}, auth_registry, cache)
        env["PIPELINE_URL"] = env["PIPELINE_URL"].replace(auth_registry.host, proxy.host)
        env["OCI_REGISTRY"] = proxy.host
        stderr = tmp_path / "stderr"
        with open(stderr, "wb") as err:
            args = ["--host", "127.0.0.1", "--port", str(free_port()), "--grpc-port", "0"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgepipe.engine.cli", *args],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            try:
                partial = wait_for_partial(cache, proc, least=4 << 20)
                t0 = time.monotonic()
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
                took = time.monotonic() - t0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    text = stderr.read_text()
    assert proc.returncode == 130, text[-3000:]
    assert took < 1.0, f"the engine took {took:.1f} s to stop"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("edgepipe-engine: SIGINT during start-up: stopped"), last
    assert partial.name in last
    left = [p.relative_to(cache) for p in cache.rglob(".*")]
    assert left == [], f"partial files left in the cache: {left}"

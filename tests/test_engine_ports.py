"""A port another process holds ends the engine with one line naming the port and its
setting, and a non-zero exit, before any model loads: a real engine process against a
port this test holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.localengine import free_port


@pytest.fixture
def held():
    """A port held by a listening socket of this process."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def run_engine(model: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.engine.cli", "--model", str(model), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_http_port_in_use(models_dir: Path, held: int) -> None:
    proc = run_engine(
        models_dir / "add1.onnx",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        env={"EDGEPIPE_ENGINE_PORT": str(held)},
    )
    assert proc.returncode != 0
    assert proc.stderr.splitlines() == [
        f"edgepipe-engine: HTTP port {held} on 127.0.0.1 is in use; set EDGEPIPE_ENGINE_PORT "
        "(or --port) to a free port"
    ]


def test_the_grpc_port_in_use(models_dir: Path, held: int) -> None:
    proc = run_engine(
        models_dir / "add1.onnx",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--grpc-port",
        str(held),
    )
    assert proc.returncode != 0
    assert proc.stderr.splitlines() == [
        f"edgepipe-engine: gRPC port {held} on 127.0.0.1 is in use; set "
        "EDGEPIPE_ENGINE_GRPC_PORT (or --grpc-port) to a free port, or 0 to turn gRPC off"
    ]

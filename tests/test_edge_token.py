"""A published pipeline's ``docker run`` line, run with EDGEPIPE_ENGINE_API_TOKEN in the
environment (podman here): the edge answers its probes, refuses requests without the
token, serves them with it, and the line never holds the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from edgepipe.localengine import free_port
from tests.helpers.engine_http import get
from tests.helpers.podman import docker_run_as_podman, podman, wait_engine_ready

TOKEN = "edge-token-c0ffee42"


def test_the_docker_line_with_a_token_runs_an_edge_that_asks_for_it(
    image, own_registry, models_dir, monkeypatch
) -> None:
    # The line's $OCI_USERNAME/$OCI_PASSWORD are expanded from this process's env.
    monkeypatch.setenv("OCI_USERNAME", own_registry.username)
    monkeypatch.setenv("OCI_PASSWORD", own_registry.password)
    env = dict(os.environ)
    proc = subprocess.run(
        [
            sys.executable, "-m", "edgepipe.cli", "publish", "push",
            "--model", str(models_dir / "add1.onnx"),
            "--registry", f"{own_registry.host}/edge", "--engine-image", image, "-o", "json",
        ],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)["dockerRunCommand"]
    assert "-e EDGEPIPE_ENGINE_API_TOKEN \\" in line and TOKEN not in line
    name, port = f"edge-token-{uuid.uuid4().hex[:6]}", free_port()
    cmd = docker_run_as_podman(line, name, port, f"{name}-cache")
    try:
        run = subprocess.run(
            cmd, env={**env, "EDGEPIPE_ENGINE_API_TOKEN": TOKEN},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        try:
            wait_engine_ready(port, timeout=120)  # the probes need no token
        except AssertionError:
            logs = podman("logs", name, check=False)
            raise AssertionError(logs.stdout[-3000:] + logs.stderr[-3000:]) from None
        url = f"http://127.0.0.1:{port}/pipelines"
        assert get(url)[0] == 401
        assert get(url, headers={"Authorization": "Bearer wrong"})[0] == 403
        status, body = get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and b"add1" in body, body
        logs = podman("logs", name).stdout + podman("logs", name).stderr
        assert "token needed" in logs and TOKEN not in logs
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", f"{name}-cache", check=False)

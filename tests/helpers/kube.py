"""Helpers for cluster tests: kubectl against the test control plane, and waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Kubectl:
    def __init__(self, kubeconfig: Path, namespace: str = "default") -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def __call__(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        namespaced: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        cmd = ["kubectl", f"--kubeconfig={self.kubeconfig}"]
        if namespaced:
            cmd.append(f"--namespace={self.namespace}")
        proc = subprocess.run(
            [*cmd, *args], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(self, manifest: dict | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self("apply", "-f", "-", stdin=text)

    def get(self, kind: str, name: str | None = None, **kw: Any) -> Any:
        args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
        proc = self(*args, check=False, **kw)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    def items(self, kind: str, selector: str | None = None) -> list[dict]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self(*args).stdout)["items"]


def wait_for(
    what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.3
) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


# The test control plane's pods are kwok's, with made-up addresses: an operator against it
# runs the test image and must not try to reach the engines.
KWOK_OPERATOR_ENV = {
    "EDGEPIPE_OPERATOR_ENGINE_IMAGE": "edgepipe:test",
    "EDGEPIPE_OPERATOR_PROBE_ENGINES": "false",
}


class OperatorProcess:
    """``edgepipe-operator run`` as a real process against the test apiserver."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        liveness_port: int | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = env or {}
        self.liveness_port = liveness_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        liveness = []
        if self.liveness_port:
            liveness = ["--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgepipe_operator.cli", "run", "--all-namespaces", *liveness],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to finish what it was doing."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

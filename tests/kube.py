"""Helpers for cluster tests: kubectl against the test control plane, and waiting."""

from __future__ import annotations

import json
import subprocess
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

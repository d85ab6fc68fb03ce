"""Run an engine as a child process on a free loopback port (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``grace`` seconds, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EngineProcess:
    """``edgepipe-engine`` in a child process; a context manager that waits until ready."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        grpc_port: int | None = None,
        log_path: Path | None = None,
        wait_ready: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.tls = bool(self.env.get("EDGEPIPE_ENGINE_TLS_CERT"))
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        # gRPC on a free port too, so that engines side by side never collide on 8081.
        self.grpc_port = free_port() if grpc_port is None else grpc_port
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.args = [
            sys.executable,
            "-m",
            "edgepipe.engine.cli",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
        ]
        self.log_path = log_path
        self.wait_ready = wait_ready
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    def start(self) -> EngineProcess:
        if self.log_path:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.wait_listening()
        if self.wait_ready:
            self.wait_for("/health/ready", 200)
        return self

    def wait_listening(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"engine did not listen on {self.url} in {self.timeout}s")

    def wait_for(self, path: str, status: int) -> None:
        deadline = time.monotonic() + self.timeout
        last = None
        # A probe of our own child on loopback: its certificate is not what is checked here.
        context = ssl._create_unverified_context() if self.tls else None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + path, timeout=5, context=context) as resp:
                    last = resp.status
            except urllib.error.HTTPError as exc:
                last = exc.code
            except OSError:
                last = None
            if last == status:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.url}{path} answered {last}, not {status}: {self.log()}")

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

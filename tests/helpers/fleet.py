"""Edges that follow their pointer: signed publishes to named edges, an edge engine's env,
a steady client, its /status, and a proxy that counts the model bytes an edge downloads."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from edgepipe import fleet
from edgepipe.client import EngineClient
from edgepipe.oci import signing
from tests.helpers.background import Background
from tests.helpers.cli import cli
from tests.helpers.engine_http import get
from tests.helpers.proxy import ForwardingProxy
from tests.helpers.publishing import creds_env

X = [{"x": np.arange(4, dtype=np.float32).reshape(1, 4)}]


def keypair(folder: Path) -> tuple[Path, Path]:
    signer = signing.Signer.generate()
    key, pub = folder / "fleet.key", folder / "fleet.pub"
    key.write_text(signer.private_pem())
    pub.write_text(signer.public_pem())
    return key, pub


def push(reg, folder: Path, config: dict, *extra: str) -> dict:
    """``edgepipe publish push`` of ``config`` (then ``extra`` flags); its JSON status."""
    path = folder / f"{config['name']}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["publish", "push", str(path), "--registry", f"{reg.host}/edge", "-o", "json"]
    return json.loads(cli(*args, *extra, env=creds_env(reg)).stdout)


def edge_env(reg, status: dict, edge: str, cache: Path, pub: Path | None, **update) -> dict:
    """An edge engine that follows its pointer, updating every second by default."""
    env = {
        "PIPELINE_URL": fleet.pointer_url(status["pipelineUrl"], edge),
        "OCI_REGISTRY": reg.host,
        "OCI_USERNAME": reg.username,
        "OCI_PASSWORD": reg.password,
        "OCI_PLAIN_HTTP": "true",
        "EDGE_NAME": edge,
        "EDGEPIPE_ENGINE_CACHE_DIR": str(cache),
        "EDGEPIPE_ENGINE_UPDATE_SECONDS": "1",
        # On every update's way to Current: 1.5 s (was 3) still sees >= 5 answers of a
        # bad version under tests' loads (20 a second), at the first 0.5 s look.
        "EDGEPIPE_ENGINE_UPDATE_PROBATION_SECONDS": "1.5",
    }
    if pub is not None:
        env["OCI_VERIFY_KEY"] = str(pub)
    env.update({f"EDGEPIPE_ENGINE_UPDATE_{k.upper()}": str(v) for k, v in update.items()})
    return env


def status(url: str) -> dict:
    code, body = get(url + "/status")
    assert code == 200, body
    return json.loads(body)


def wait_status(
    url: str, state: str, version: str | None = None, timeout: float = 30, reason: str = ""
) -> dict:
    """/status once it shows ``state`` (running ``version``; its reason saying ``reason``)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(url)
        running = version is None or st["running"]["version"] == version
        if st["state"] == state and running and reason in (st["reason"] or ""):
            return st
        assert time.monotonic() < deadline, f"waited for {state} {version or ''}: {st}"
        time.sleep(0.2)


def answer(url: str, pipeline: str) -> dict:
    (rec,) = EngineClient(url, timeout=10).infer_records(pipeline, X)
    return rec


@dataclass
class Load(Background):
    """A client sending about ``rate`` requests a second until stopped; what it saw."""

    url: str
    pipeline: str
    rate: float = 20.0
    versions: list[str] = field(default_factory=list)  # model_version, request by request
    failures: list[str] = field(default_factory=list)
    checks: int = 0  # answers with failed validations
    latencies: list[float] = field(default_factory=list)

    join_seconds = 15.0

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                rec = answer(self.url, self.pipeline)
                self.versions.append(rec["model_version"])
                self.checks += bool(rec["check_failures"])
            except Exception as exc:  # every failure is what the test counts
                self.failures.append(repr(exc))
            took = time.perf_counter() - t
            self.latencies.append(took)
            self._stop.wait(max(0.0, 1 / self.rate - took))

    def changes(self) -> list[str]:
        """The versions in the order they answered, each once per run of answers."""
        return [v for i, v in enumerate(self.versions) if i == 0 or self.versions[i - 1] != v]


class CountingProxy(ForwardingProxy):
    """A plain-HTTP proxy in front of a registry, counting the bytes of blob GETs."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.blob_bytes = 0
        self.requests: list[str] = []
        self.codes: list[int] = []  # each request's answer, in the same order
        self.cut: str | None = None  # a blob digest whose next download breaks half-way
        self.ranges: list[str] = []  # Range headers seen

    def seen(self, handler, body, resp, data: bytes) -> bool:
        self.requests.append(f"{handler.command} {handler.path}")
        self.codes.append(resp.status)
        if handler.headers.get("Range"):
            self.ranges.append(handler.headers["Range"])
        if handler.command == "GET" and "/blobs/" in handler.path:
            self.blob_bytes += len(data)
            if self.cut and handler.path.endswith(self.cut) and resp.status == 200:
                self.cut = None
                # Headers for the whole blob, half its bytes, then the connection closes.
                handler.send_response(resp.status)
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                with contextlib.suppress(OSError):  # the client may reset first
                    handler.wfile.write(data[: len(data) // 2])
                    handler.wfile.flush()
                handler.close_connection = True
                return True
        return False

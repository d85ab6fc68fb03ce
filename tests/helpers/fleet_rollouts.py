"""A fleet for rollout tests: 12 edge engines as real processes following their pointers
through a recording proxy in front of the real registry (every pointer move and every status
record each edge wrote, timed), each edge's /status sampled in the background, and the
Pipeline/Publish objects a rollout is driven with."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from edgepipe import fleet, oci
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.background import Background
from tests.helpers.fleet import edge_env
from tests.helpers.fleet import status as edge_status
from tests.helpers.kube import Kubectl, wait_for
from tests.helpers.proxy import ForwardingProxy

EDGES = [f"dock-{i}" for i in range(1, 13)]
PIPELINE = "detector"
PUBLISH = "docks"
FINITE = [{"name": "finite", "expr": "all(isfinite(y))"}]
# A status tag (DESIGN-26 §1): <edge>.<ms>.<state>.<running12>.<target12>
STATUS_TAG = re.compile(r"^([a-z0-9-]+)\.(\d+)\.([A-Za-z]+)\.([0-9a-f]{12})\.([0-9a-f]{12}|none)$")


@dataclass
class Record:
    t: float  # time.monotonic() when the registry answered
    method: str
    path: str
    code: int
    digest: str | None  # sha256 of a PUT's body


class RecordingProxy(ForwardingProxy):
    """A plain-HTTP proxy in front of a registry recording every manifest write (PUT,
    DELETE) with its time, its answer and the digest of what was written."""

    timeout = 60.0

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.records: list[Record] = []
        self.requests = 0
        self.lock = threading.Lock()

    def seen(self, handler, body, resp, data: bytes) -> bool:
        self.note(handler.command, handler.path, resp.status, body)
        return False

    def note(self, method: str, path: str, code: int, body: bytes | None) -> None:
        with self.lock:
            self.requests += 1
            if method in ("PUT", "DELETE") and "/manifests/" in path:
                digest = "sha256:" + hashlib.sha256(body).hexdigest() if body else None
                self.records.append(Record(time.monotonic(), method, path, code, digest))

    # -- what the records say ----------------------------------------------------------------

    def pointer_moves(self, edge: str, since: float = 0.0) -> list[tuple[float, str]]:
        """Each write of ``edge``'s pointer that the registry took: (time, digest)."""
        tail = f"/pipelines/{PIPELINE}/manifests/{fleet.pointer_tag(edge)}"
        with self.lock:
            return [
                (r.t, r.digest or "")
                for r in self.records
                if r.method == "PUT" and r.path.endswith(tail) and r.code < 300 and r.t >= since
            ]

    def status_records(self, edge: str, since: float = 0.0) -> list[tuple[float, str, str, str]]:
        """Each status record ``edge`` wrote (DESIGN-26 §1 tags): (time, state, running12,
        target12), in order."""
        out = []
        with self.lock:
            records = [r for r in self.records if r.method == "PUT" and r.code < 300]
        for r in records:
            if r.t < since or f"/status/{PIPELINE}/manifests/" not in r.path:
                continue
            match = STATUS_TAG.match(r.path.rsplit("/", 1)[1])
            if match and match.group(1) == edge:
                out.append((r.t, match.group(3), match.group(4), match.group(5)))
        return out

    def current_at(self, edge: str, digest: str, since: float = 0.0) -> float | None:
        """When ``edge`` first wrote that it is Current on ``digest``; None if it never did."""
        short = digest.removeprefix("sha256:")[:12]
        for t, state, running, _ in self.status_records(edge, since):
            if state == "Current" and running == short:
                return t
        return None


@dataclass
class StatusWatch(Background):
    """Each edge's /status every ``interval`` seconds, in the background: (time, state,
    running digest) whenever it changed."""

    urls: dict[str, str]
    interval: float = 0.5
    history: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for edge, url in list(self.urls.items()):
                try:
                    st = edge_status(url)
                except Exception:  # a stopped edge has no /status
                    continue
                seen = (st["state"], st["running"]["digest"])
                runs = self.history.setdefault(edge, [])
                if not runs or runs[-1][1:] != seen:
                    runs.append((time.monotonic(), *seen))

    def digests(self, edge: str, since: float = 0.0) -> set[str]:
        """Every digest ``edge`` served since then."""
        return {d for t, _, d in self.history.get(edge, []) if t >= since}


class Fleet:
    """The 12 edges as real engine processes; started together, stopped together."""

    def __init__(self, proxy: RecordingProxy, reg, status: dict, pub: Path, folder: Path):
        # The edges reach the registry through the proxy, with its real credentials.
        self.via = SimpleNamespace(host=proxy.host, username=reg.username, password=reg.password)
        self.status, self.pub, self.folder = status, pub, folder
        self.engines: dict[str, EngineProcess] = {}
        self.starts = 0

    def env(self, edge: str) -> dict[str, str]:
        env = edge_env(self.via, self.status, edge, self.folder / edge, self.pub,
                       probation_seconds=1, heartbeat_seconds=5)  # fmt: skip
        env["EDGEPIPE_ENGINE_LOG_INFERENCES"] = "false"
        return env

    def start(self, *edges: str) -> None:
        """Start ``edges`` (all by default) at once, and wait until each serves."""
        fresh = {}
        for edge in edges or EDGES:
            self.starts += 1
            log = self.folder / f"{edge}-{self.starts}.log"
            fresh[edge] = EngineProcess(env=self.env(edge), log_path=log, timeout=120)
        self.engines.update(fresh)
        with ThreadPoolExecutor(len(fresh)) as pool:
            list(pool.map(EngineProcess.start, fresh.values()))

    def stop(self, *edges: str) -> None:
        """Stop ``edges`` (all by default): SIGTERM to each first, then wait for each."""
        chosen = [self.engines[e] for e in edges or list(self.engines)]
        for e in chosen:
            if e.proc is not None and e.proc.poll() is None:
                e.proc.terminate()
        for e in chosen:
            e.stop()

    def url(self, edge: str) -> str:
        return self.engines[edge].url

    def urls(self) -> dict[str, str]:
        return {e: p.url for e, p in self.engines.items()}

    def wait_all(self, digest: str, edges: list[str] | None = None, timeout: float = 60) -> None:
        """Until every edge (or ``edges``) says Current on ``digest`` at its /status."""

        def behind() -> list[str]:
            out = []
            for edge in edges or EDGES:
                st = edge_status(self.url(edge))
                if st["state"] != "Current" or st["running"]["digest"] != digest:
                    out.append(f"{edge}: {st['state']} {st['running']['digest'][:19]}")
            return out

        wait_for(f"every edge Current on {digest[:19]}", lambda: not behind() or None, timeout)


# -- versions and the Publish on the control plane ------------------------------------------


class Versions:
    """Pipeline versions on the test control plane: a model pushed (through the proxy),
    the Pipeline's steps changed to it, its new version once it runs."""

    def __init__(self, kubectl: Kubectl, proxy: RecordingProxy, reg, folder: Path) -> None:
        self.kubectl, self.folder = kubectl, folder
        self.client = oci.Client(
            proxy.host, oci.Credentials(reg.username, reg.password), plain_http=True
        )
        self.digests: dict[str, str] = {}  # pipeline version -> its manifest digest

    def apply(self, model: Path) -> str:
        """The Pipeline running ``model`` (rows checked finite); its new version."""
        pushed = oci.push_model(
            self.client, model, name="add", repository=f"edge/models/{model.stem}"
        )
        before = self.current()
        steps = [{"model": {"name": "add", "url": pushed.reference, "sha256": pushed.sha256}}]
        self.kubectl.apply(
            {
                "apiVersion": "edgepipe.io/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": PIPELINE},
                "spec": {"deployed": True, "steps": steps, "validations": FINITE,
                         "deployment": {"replicas": 1}},
            }
        )  # fmt: skip
        return wait_for(
            "the Pipeline's new version",
            lambda: (v := self.current()) and v != before and self._running() and v,
            90,
        )

    def add(self, value: float) -> str:
        """A good version: y = x + value."""
        return self.apply(m.add_constant(self.folder / f"add-{value:g}.onnx", value))

    def breaking(self) -> str:
        """A version that passes the smoke test (x = 0.5) and answers NaN on the rows of
        tests.helpers.fleet.X (x up to 3): edges roll it back in probation under load."""
        return self.apply(m.sqrt_of_difference(self.folder / "sqrt.onnx", 1.0))

    def current(self) -> str | None:
        return ((self.kubectl.get("pipeline", PIPELINE) or {}).get("status") or {}).get("version")

    def _running(self) -> bool:
        st = (self.kubectl.get("pipeline", PIPELINE) or {}).get("status") or {}
        return st.get("phase") == "Running"

    def digest(self, status: dict) -> str:
        """The manifest digest of the Publish status's pipelineUrl."""
        return self.client.get_manifest(oci.Reference.parse(status["pipelineUrl"]))[1]


def publish_manifest(proxy: RecordingProxy, spec: dict) -> dict:
    """The Publish of PIPELINE to the registry behind ``proxy``, signed, to the 12 edges."""
    return {
        "apiVersion": "edgepipe.io/v1alpha1",
        "kind": "Publish",
        "metadata": {"name": PUBLISH},
        "spec": {
            "pipeline": PIPELINE,
            "registry": {"url": f"{proxy.host}/edge", "secretRef": {"name": "registry-creds"}},
            "signing": {"secretRef": {"name": "edge-signing"}},
            "edges": EDGES,
            **spec,
        },
    }


def rollout_status(kubectl: Kubectl, name: str = PUBLISH) -> dict:
    return (((kubectl.get("publish", name) or {}).get("status") or {}).get("rollout")) or {}


def wait_rollout(
    kubectl: Kubectl, version: str, phase: str, timeout: float = 120, name: str = PUBLISH
) -> dict:
    return wait_for(
        f"the rollout of {version} to be {phase}",
        lambda: (
            (r := rollout_status(kubectl, name)).get("version") == version
            and r.get("phase") == phase
            and r
        ),
        timeout,
        interval=0.5,
    )


def events(kubectl: Kubectl, reason: str) -> list[dict]:
    out = kubectl("get", "events", "-o", "json", "--field-selector", f"reason={reason}").stdout
    return json.loads(out)["items"]

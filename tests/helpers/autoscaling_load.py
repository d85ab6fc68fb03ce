"""For the autoscaling tests on the real node: a bounded load from the host through a
Service's ClusterIP that counts every failure, and a watcher that times each new engine
pod's way to serving (issue 28)."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from tests.helpers.kube import Kubectl

JSON = "application/json; format=pandas-records"


@dataclass
class Load:
    """``workers`` threads, each posting ``body`` and then pausing ``pause`` seconds, for
    ``limit`` seconds at most (it stops by itself)."""

    url: str
    body: bytes
    workers: int = 3
    pause: float = 0.0
    limit: float = 600
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)
        ]
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            req = urllib.request.Request(self.url, data=self.body, headers={"Content-Type": JSON})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    orjson.loads(resp.read())
                with self._lock:
                    self.ok += 1
            except (OSError, urllib.error.URLError, ValueError) as exc:
                with self._lock:
                    self.failures.append(f"{time.monotonic():.1f} {type(exc).__name__}: {exc}")
            if self.pause:
                self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(40)


def stamp(text: str | None) -> float | None:
    """An RFC 3339 time of the apiserver as epoch seconds (whole seconds)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _served(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return False
    return any(
        line.startswith("edgepipe_requests_total{") and not line.endswith(" 0.0")
        for line in text.splitlines()
    )


@dataclass
class PodWatch:
    """Polls a pipeline's engine pods (every ``every`` s) and the HPA, and keeps the first
    time (epoch seconds) each of these was seen:

    - ``hpa_saw_load``: the HPA's current CPU above its target;
    - ``scaled``: the Deployment asked for a second replica;
    - per new pod: ``created``, ``started`` (container running), ``live`` (/health/live),
      ``loaded`` (/health/ready: the model is loaded), ``ready`` (the pod's Ready
      condition, the kubelet's probe), ``serving`` (its own request counter moved).
    """

    kubectl: Kubectl
    pipeline: str
    target: int
    every: float = 0.25
    events: dict[str, float] = field(default_factory=dict)
    pods: dict[str, dict[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, known: list[str]) -> PodWatch:
        self.known = set(known)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _first(self, marks: dict[str, float], key: str, when: float | None = None) -> None:
        marks.setdefault(key, when if when is not None else time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            # A kubectl timeout on the loaded machine: poll again.
            with contextlib.suppress(Exception):
                self._poll()
            self._stop.wait(self.every)

    def _poll(self) -> None:
        hpa = self.kubectl.get("hpa", f"{self.pipeline}-engine") or {}
        for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
            used = ((metric.get("resource") or {}).get("current") or {}).get("averageUtilization")
            if used is not None and used > self.target:
                self._first(self.events, "hpa_saw_load")
        deployment = self.kubectl.get("deployment", f"{self.pipeline}-engine") or {}
        if (deployment.get("spec") or {}).get("replicas", 1) >= 2:
            self._first(self.events, "scaled")
        for pod in self.kubectl.items("pods", f"app.kubernetes.io/instance={self.pipeline}"):
            name = pod["metadata"]["name"]
            if name in self.known:
                continue
            marks = self.pods.setdefault(name, {})
            self._first(marks, "created", stamp(pod["metadata"]["creationTimestamp"]))
            st = pod.get("status") or {}
            for c in st.get("containerStatuses") or []:
                running = (c.get("state") or {}).get("running")
                if running:
                    self._first(marks, "started", stamp(running.get("startedAt")))
            for cond in st.get("conditions") or []:
                if cond["type"] == "Ready" and cond["status"] == "True":
                    self._first(marks, "ready")
            ip = st.get("podIP")
            if ip and "live" not in marks and _answers(f"http://{ip}:8080/health/live"):
                self._first(marks, "live")
            if ip and "loaded" not in marks and _answers(f"http://{ip}:8080/health/ready"):
                self._first(marks, "loaded")
            if ip and "serving" not in marks and _served(ip):
                self._first(marks, "serving")

    def read_logs(self) -> None:
        """The engine's own time stamps of each new pod (while it is still there): the
        pipeline loaded (its 'Running' line) and the port open ('serving on')."""
        for name, marks in self.pods.items():
            out = self.kubectl("logs", name, "--timestamps", check=False).stdout
            for line in out.splitlines():
                when, _, text = line.partition(" ")
                if text.rstrip().endswith(": Running"):
                    self._first(marks, "loaded_log", _nanostamp(when))
                if "serving on" in text:
                    self._first(marks, "listening_log", _nanostamp(when))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)


def _nanostamp(text: str) -> float:
    """kubectl's --timestamps (RFC 3339 with nanoseconds) as epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")

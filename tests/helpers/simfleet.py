"""A simulated edge fleet: the engine's own Updater and Heartbeat per edge, serving stubbed."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from edgepipe import edgelog, fleet, oci
from edgepipe.engine import edgestatus, updater
from edgepipe.engine.metrics import Metrics
from edgepipe.engine.settings import Settings


class SimUpdater(updater.Updater):
    """The engine's update loop (poll, verify, download, record, status) with the model
    loading, the switch and the probation's traffic stubbed: a version "loads" at once and
    holds through a probation of ``probation_seconds`` unless its digest is in ``bad``."""

    fleet: SimFleet

    def _pointer(self) -> str:
        self.client = self.client or self.fleet.pick()  # a counted session, never a new one
        return super()._pointer()

    def _fetch(self, digest: str):
        self.client = self.client or self.fleet.pick()
        return super()._fetch(digest)

    async def _update(self, digest: str) -> None:
        await super()._update(digest)
        if self.status.state == "Current" and self.status.running["digest"] == digest:
            self.fleet.current_at[self.status.edge] = (digest, time.time())

    def _load(self, version):
        return SimpleNamespace(name=self.status.pipeline, close=lambda: None)

    async def _switch(self, pipeline, brief: dict[str, str]) -> None:
        self.status.running = brief

    async def _probation(self, name: str) -> str | None:
        await asyncio.sleep(self.update.probation_seconds)
        return self.fleet.bad.get(self.status.running["digest"])


class SimHeartbeat(edgestatus.Heartbeat):
    """The engine's heartbeat, on the fleet's counted sessions."""

    fleet: SimFleet

    def _push(self, doc) -> None:
        self.client = self.client or self.fleet.pick()
        super()._push(doc)


class CountingClient(oci.Client):
    """A registry session that counts its requests by kind (poll, status, download), and
    apart those the registry refused (``"<METHOD> <kind> refused"``, an answer of 400 or more)."""

    def __init__(self, *args, counts: Counter, lock: threading.Lock, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        do = self.reg.do_request

        def counted(url, method="GET", *a, **kw):
            kind = "status" if "/status/" in url else "download"
            if method == "HEAD" and "/manifests/edge-" in url:
                kind = "poll"
            with lock:
                counts[f"{method} {kind}"] += 1
            response = do(url, method, *a, **kw)
            if getattr(response, "status_code", 200) >= 400:
                # Not done: docker-registry refuses a manifest DELETE with a 500 now and
                # then while others write their tags, and the edge tries it again.
                with lock:
                    counts[f"{method} {kind} refused"] += 1
            return response

        self.reg.do_request = counted


class SimFleet:
    """``n`` edges named ``<name>-0001``... following ``<pipeline_url>``'s pointers, each
    running the engine's Updater and Heartbeat as coroutines on one event loop (in a thread
    of its own), the registry calls in a thread pool. Start with ``with``."""

    def __init__(
        self,
        registry,
        pipeline_url: str,
        running: dict[str, str],
        n: int,
        cache: Path,
        *,
        pub: Path | None = None,
        poll: float = 5.0,
        probation: float = 1.0,
        heartbeat: float = 300.0,
        name: str = "sim",
        clients: int = 8,
        workers: int = 32,
    ) -> None:
        self.reg, self.url, self.running = registry, pipeline_url, running
        self.edges = [f"{name}-{i:04d}" for i in range(1, n + 1)]
        self.cache, self.pub = cache, pub
        self.poll, self.probation, self.heartbeat = poll, probation, heartbeat
        self.current_at: dict[str, tuple[str, float]] = {}  # edge: (digest, when Current)
        self.bad: dict[str, str] = {}  # digest: why its probation fails
        self.counts: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()  # every count since the start, never reset
        self.lock = threading.Lock()
        self.n_clients, self.workers = clients, workers
        self.clients: list[CountingClient] = []
        self.updaters: list[SimUpdater] = []
        self.heartbeats: list[SimHeartbeat] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Event()
        self.errors: list[BaseException] = []

    def client(self) -> CountingClient:
        creds = oci.Credentials(self.reg.username, self.reg.password)
        return CountingClient(
            self.reg.host, creds, plain_http=True, counts=self.counts, lock=self.lock
        )

    def pick(self) -> CountingClient:
        """One of the fleet's sessions (an edge whose session failed takes another)."""
        return random.choice(self.clients)

    def _settings(self, edge: str) -> Settings:
        url = f"{self.url.rsplit(':', 1)[0]}:{fleet.pointer_tag(edge)}"
        extra = {"OCI_VERIFY_KEY": str(self.pub)} if self.pub else {}
        return Settings(**{
            "PIPELINE_URL": url, "OCI_USERNAME": self.reg.username,
            "OCI_PASSWORD": self.reg.password, "OCI_PLAIN_HTTP": True, "EDGE_NAME": edge,
            "cache_dir": self.cache / edge, "update_seconds": self.poll,
            "update_probation_seconds": self.probation, **extra,
        })  # fmt: skip

    async def _edge(self, i: int, edge: str, metrics: Metrics, clients: list) -> None:
        settings = self._settings(edge)
        status = edgestatus.EdgeStatus(
            edge=edge, pipeline=oci.Reference.parse(self.url).repository.rsplit("/", 1)[-1],
            running=dict(self.running), poll_seconds=self.poll,
        )  # fmt: skip
        plane = SimpleNamespace(pipelines={status.pipeline: None})
        up = SimUpdater(settings, settings.update, plane, metrics, status)
        up.fleet = self
        up.client = clients[i % len(clients)]
        ref = up.ref
        target = edgestatus.StatusTarget(
            registry=ref.registry, plain_http=True,
            credentials=oci.Credentials(self.reg.username, self.reg.password),
            repository=fleet.status_repository(edgelog.prefix_of(str(ref)), status.pipeline),
        )  # fmt: skip
        beat = SimHeartbeat(status, target, self.heartbeat)
        beat.fleet, beat.client = self, up.client
        self.updaters.append(up)
        self.heartbeats.append(beat)
        await asyncio.sleep(random.uniform(0, self.poll))  # edges start apart, as in a fleet
        await asyncio.gather(up.run(), beat.run())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(self.workers))
        self.loop, self.main = loop, asyncio.current_task()
        metrics = Metrics()
        clients = self.clients = [self.client() for _ in range(self.n_clients)]
        tasks = [
            asyncio.create_task(self._edge(i, e, metrics, clients))
            for i, e in enumerate(self.edges)
        ]
        self.started.set()
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to the caller
            self.errors.append(exc)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> SimFleet:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        self.started.wait(60)
        return self

    def __exit__(self, *_) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.main.cancel)
        self.thread.join(30)

    def reset_counts(self) -> dict[str, int]:
        """The requests counted so far (and start counting from zero; ``totals`` keeps
        them all)."""
        with self.lock:
            out = dict(self.counts)
            self.totals.update(self.counts)
            self.counts.clear()
        return out

    def current(self, digest: str) -> list[str]:
        """The edges that have been Current on ``digest`` (their last update)."""
        return [e for e, (d, _) in self.current_at.items() if d == digest]


def run_waves(driver, poll: float = 0.5, timeout: float = 600) -> list[dict]:
    """Drive a rollout (``edgepipe.publish.waves.WaveDriver``) to its end; per wave, its
    edges and when its pointers started and finished moving (``time.time()``; they move
    together, concurrently: each edge's own move counts as the wave's end)."""
    waves: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = time.time()
        step = driver.step()
        if step.action == "move":
            waves.append({"edges": list(step.edges), "moving": t, "moved": time.time(),
                          "moves": dict.fromkeys(step.edges, time.time())})  # fmt: skip
        if step.action == "complete" or not driver.state.waves:
            for wave, (_, done) in zip(waves, driver.state.done_waves, strict=False):
                wave["done"] = done.timestamp() if done else None
            return waves
        if step.action == "abort":
            raise AssertionError(f"rollout aborted: {driver.state.reason}")
        if step.action == "wait":
            time.sleep(poll)
    raise AssertionError(f"rollout not complete after {timeout:g} s: {driver.state}")


def wave_times(sim: SimFleet, waves: list[dict], digest: str) -> list[dict]:
    """Per wave: seconds its pointer moves took, from the last move to its last edge Current
    on ``digest``, from the first move to it, and the longest from an edge's own pointer
    move to its Current."""
    out = []
    for w in waves:
        at = {e: sim.current_at[e][1] for e in w["edges"] if e in sim.current_at}
        done = [e for e in w["edges"] if sim.current_at.get(e, ("", 0))[0] == digest]
        last = max(at.values())
        out.append({
            "edges": len(w["edges"]), "current": len(done),
            "pointers_s": w["moved"] - w["moving"], "current_s": last - w["moved"],
            "from_first_move_s": last - w["moving"],
            "edge_max_s": max(at[e] - w["moves"][e] for e in at),
        })  # fmt: skip
    return out

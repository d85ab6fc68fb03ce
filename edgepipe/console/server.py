"""The fleet page's server: static files and one JSON endpoint that reads the cluster through
``Client`` and keeps each edge's recent log uploads (a small ring buffer per edge)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC = Path(__file__).parent / "static"
# Newest uploads kept per edge: at one upload a minute, a bit over a day.
HISTORY = 2000


@dataclass
class ConsoleSettings:
    """Where the console reads the cluster and how often the page refreshes."""

    kubeconfig: str | None = None
    namespace: str | None = None
    context: str | None = None
    port: int = 8765
    refresh_seconds: float = 2.0
    history: int = HISTORY


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (then if then.tzinfo else then.replace(tzinfo=UTC)).timestamp()


class Fleet:
    """What the page shows, read from the cluster; the upload series outlive a page reload
    because they are kept here, one point per new upload (its time and record count)."""

    def __init__(self, client: Any, history: int = HISTORY) -> None:
        self.client = client
        self.history = history
        self.series: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def _record(self, publish: str, edge: dict[str, Any]) -> list[list[float]]:
        points = self.series.setdefault((publish, edge["name"]), deque(maxlen=self.history))
        when = _epoch(edge.get("lastUpload"))
        records = edge.get("lastUploadRecords")
        if when is not None and records is not None and (not points or points[-1][0] != when):
            points.append((when, int(records)))
        return [[t, n] for t, n in points]

    def _publish(self, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        st = obj.get("status") or {}
        edges = []
        for e in st.get("edges") or []:
            edges.append(
                {
                    "name": e.get("name"),
                    "version": e.get("version"),
                    "state": e.get("state") or "Unknown",
                    "lastSeen": e.get("lastSeen"),
                    "reason": e.get("reason"),
                    "wave": e.get("wave"),
                    "lastUpload": e.get("lastUpload"),
                    "lastUploadRecords": e.get("lastUploadRecords"),
                    "uploads": self._record(name, e),
                }
            )
        return {
            "name": name,
            "pipeline": obj["spec"].get("pipeline"),
            "phase": st.get("phase") or "Pending",
            "version": st.get("pipelineVersion") or obj["spec"].get("version"),
            "chartVersion": st.get("helmChartVersion"),
            "message": st.get("message") if st.get("phase") == "Failed" else None,
            "rollout": st.get("rollout"),
            "edges": edges,
        }

    def snapshot(self) -> dict[str, Any]:
        """Pipelines with their versions, and Publishes with their rollout and edges."""
        pipelines = []
        for obj in self.client.list("pipelines"):
            st = obj.get("status") or {}
            pipelines.append(
                {
                    "name": obj["metadata"]["name"],
                    "phase": st.get("phase") or "Pending",
                    "version": st.get("version"),
                    "deployed": bool(st.get("deployed")),
                    "versions": [
                        {"version": v.get("version"), "createdAt": v.get("createdAt")}
                        for v in st.get("versions") or []
                    ],
                }
            )
        publishes = [self._publish(o) for o in self.client.list("publishes")]
        # The series of edges and Publishes that are gone go with them.
        shown = {(p["name"], e["name"]) for p in publishes for e in p["edges"]}
        for key in set(self.series) - shown:
            del self.series[key]
        return {
            "namespace": self.client.namespace,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "pipelines": sorted(pipelines, key=lambda p: p["name"]),
            "publishes": sorted(publishes, key=lambda p: p["name"]),
        }


class _Reader:
    """One cluster read at a time; pages asking within a second share it."""

    def __init__(self, fleet: Fleet, refresh: float) -> None:
        self.fleet = fleet
        self.refresh = refresh
        self.lock = asyncio.Lock()
        self.at = 0.0
        self.last: dict[str, Any] | None = None

    async def read(self) -> dict[str, Any]:
        async with self.lock:
            if self.last is None or time.monotonic() - self.at > min(1.0, self.refresh / 2):
                try:
                    self.last = await asyncio.to_thread(self.fleet.snapshot)
                    self.last["error"] = None
                except Exception as exc:  # the page says so and keeps the last view
                    self.last = {**(self.last or {}), "error": str(exc)}
                self.last["refreshSeconds"] = self.refresh
                self.at = time.monotonic()
            return self.last


def create_app(settings: ConsoleSettings, client: Any = None) -> web.Application:
    """The console's aiohttp application; ``client`` defaults to a ``Client`` made from the
    settings' kubeconfig, namespace and context."""
    if client is None:
        from edgepipe.client.cluster import Client

        client = Client(settings.kubeconfig, settings.namespace, settings.context)
    reader = _Reader(Fleet(client, settings.history), settings.refresh_seconds)
    hosts = {f"127.0.0.1:{settings.port}", f"localhost:{settings.port}"}

    @web.middleware
    async def local_only(request: web.Request, handler):
        # Another site's page cannot read the cluster through this one by renaming itself
        # to 127.0.0.1 (DNS rebinding): only the loopback names are served.
        if request.host not in hosts:
            raise web.HTTPForbidden(text="the console answers on 127.0.0.1 only")
        return await handler(request)

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def fleet(_: web.Request) -> web.Response:
        return web.json_response(await reader.read(), headers={"Cache-Control": "no-store"})

    app = web.Application(middlewares=[local_only])
    app.router.add_get("/", index)
    app.router.add_get("/api/fleet", fleet)
    app.router.add_static("/static/", STATIC)
    return app


def serve(settings: ConsoleSettings, ready=None) -> None:
    """Serve the console on 127.0.0.1 until interrupted; ``ready(url)`` once it listens."""
    app = create_app(settings)

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", settings.port).start()
            if ready:
                ready(f"http://127.0.0.1:{settings.port}/")
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a quiet stop
        asyncio.run(run())

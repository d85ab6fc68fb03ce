"""Edge updates: follow the pointer ``PIPELINE_URL`` names, and swap to each new version
live, with a probation that rolls back by itself.

A background task (an aiohttp cleanup context) polls every ``update_seconds`` ±20% with
one HEAD of the pointer. A new digest is verified (``OCI_VERIFY_KEY``) before anything
else, its missing models downloaded while the old version serves, loaded beside it,
smoke-tested, and switched to (``swap``). During probation a 5xx or failed-validation rate
above the limit switches back to the previous version and marks the digest bad on this
device: never retried until the pointer moves again. Every registry call and every load
runs in a thread; the event loop only decides.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from edgepipe import edgelog, fleet, oci

from . import edgestatus, swap, versions
from .dataplane import DataPlane
from .edge import client_for, prune_cache, reference, verify_key
from .metrics import Metrics
from .settings import Settings, UpdatePolicy
from .smoke import SmokeFailed, smoke_test
from .wiring import Loading, load_pipeline

log = logging.getLogger("edgepipe.engine")
# Registry down: the wait doubles from the poll interval up to this.
MAX_BACKOFF = 300.0
POINTER_RETRY = 1.0  # seconds before a failed poll's (or download's) one retry


class Updater:
    def __init__(
        self,
        settings: Settings,
        update: UpdatePolicy,
        plane: DataPlane,
        metrics: Metrics,
        status: edgestatus.EdgeStatus,
    ) -> None:
        edge = settings.edge
        assert edge is not None
        self.settings, self.update, self.plane, self.metrics = settings, update, plane, metrics
        self.status = status
        self.ref = reference(edge)
        self.url = str(self.ref)
        self.key = verify_key(edge)
        self.cache = settings.cache_dir
        self.record_file = versions.record_path(self.cache, self.url)
        self.record = versions.DeviceRecord.load(self.record_file)
        self.client: oci.Client | None = None
        self.ready: versions.Version | None = None  # fetched, waiting for the lock to go
        self.failures = 0  # polls in a row the registry failed, for the back-off
        self.retries = 0  # downloads in a row that failed (registry, disk), likewise
        self.took: dict[str, float] = {}  # the last update's phases, in seconds (logged)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self.settle()
        while True:
            await asyncio.sleep(self._next_wait())
            await self.poll()

    async def settle(self) -> None:
        """At start: a version this device has not proven (an online restart in the middle
        of an update starts on what the pointer names) goes through probation, and one it
        marked bad gives way to the last good version at once."""
        good, started = self.record.running, self.status.running
        if good is None or not started["digest"] or good["digest"] == started["digest"]:
            self.status.previous = self.record.previous if good == started else None
            self.record.running = started
            self.record.save(self.record_file)
            return
        digest = started["digest"]
        if digest in self.record.bad:
            await self._roll_back(digest, good, f"marked bad: {self.record.bad[digest]}")
            return
        self.status.previous = good
        self.status.set("Probation", "started on a version this device has not proven")
        broke = await self._probation(next(iter(self.plane.pipelines)))
        if broke:
            await self._roll_back(digest, good, broke)
            return
        self.record.running, self.record.previous = started, good
        self.record.save(self.record_file)
        await asyncio.to_thread(self._keep, digest)
        self.status.set("Current")

    def _next_wait(self) -> float:
        n = max(self.failures, self.retries)
        base = self.update.seconds * (2 ** min(n, 8) if n else 1)
        return min(base, max(MAX_BACKOFF, self.update.seconds)) * random.uniform(0.8, 1.2)

    async def poll(self) -> None:
        try:
            digest = await asyncio.to_thread(self._pointer)
        except oci.OciError as exc:
            self.client = None
            self.failures += 1
            retry = isinstance(exc, oci.RegistryUnavailable)
            self._result("registry-down" if retry else "error", str(exc))
            return
        self.failures = 0
        if self.record.saw_pointer(digest):  # a new version gets a try at once
            self.record.save(self.record_file)
            self.retries = 0
        if digest == self.status.running["digest"]:
            self.ready, self.retries = None, 0
            self.status.polled("unchanged", digest)
            if self.status.state != "Current":  # e.g. the pointer moved back to what runs
                self.status.set("Current")
            return
        if digest in self.record.bad:
            self.status.polled("bad", digest)
            return
        self.status.polled("new", digest)
        await self._update(digest)

    def _pointer(self) -> str:
        if self.client is None:
            self.client = client_for(self.settings.registry_login, self.ref.registry)
        try:
            return fleet.manifest_digest(self.client, self.ref)
        except oci.RegistryUnavailable:
            # Once more before backing off: a registry may answer 500 to a read of a tag
            # being written at that moment (docker-registry's filesystem storage does).
            time.sleep(POINTER_RETRY)
            return fleet.manifest_digest(self.client, self.ref)

    # -- one update -------------------------------------------------------------------------

    async def _update(self, digest: str) -> None:
        took = self.took = {"download": 0.0, "load": 0.0, "smoke": 0.0, "switch": 0.0}
        if self.ready is None or self.ready.digest != digest:
            self.status.set("Downloading", f"version at {digest}")
            t = time.perf_counter()
            try:
                self.ready = await asyncio.to_thread(self._fetch, digest)
            except versions.UpdateFailed as exc:
                self._failed(digest, exc)
                return
            took["download"] = time.perf_counter() - t
        if self.update.lock is not None and self.update.lock.exists():
            self.status.set("Waiting", f"{self.update.lock} exists (EDGEPIPE_ENGINE_UPDATE_LOCK)")
            self._result("waiting")
            return
        candidate, self.ready = self.ready, None
        try:
            pipeline = await asyncio.to_thread(self._load, candidate)
        except versions.UpdateFailed as exc:
            self._failed(digest, exc)
            return
        previous = self.status.running
        await asyncio.to_thread(versions.keep_started, self.cache, self.url, self.ref)
        t = time.perf_counter()
        await self._switch(pipeline, candidate.brief())
        took["switch"] = time.perf_counter() - t
        log.info("update: took %s", ", ".join(f"{k} {v:.3f} s" for k, v in took.items()))
        self.status.previous = previous
        self.status.set("Probation", f"{self.update.probation_seconds:g} s")
        broke = await self._probation(pipeline.name)
        if broke:
            await self._roll_back(digest, previous, broke)
            return
        self.record.running, self.record.previous = candidate.brief(), previous
        self.record.save(self.record_file)
        await asyncio.to_thread(self._keep, digest)
        self.retries = 0
        self.status.set("Current")
        self._result("applied")

    def _fetch(self, digest: str) -> versions.Version:
        try:
            return versions.fetch(self.client, self.ref, digest, self.key, self.cache)
        except versions.UpdateFailed as exc:
            if exc.result != "registry-down":
                raise
        time.sleep(POINTER_RETRY)  # once more at once (a 500 while a tag is written)
        return versions.fetch(self.client, self.ref, digest, self.key, self.cache)

    def _load(self, version: versions.Version):
        """Load and smoke-test beside the running version; UpdateFailed if it cannot serve."""
        t = time.perf_counter()
        loading = Loading.of(self.settings, self.plane.calls)
        pipeline = load_pipeline(version.config, version.paths, loading)
        if pipeline.error:
            raise versions.UpdateFailed("load-failed", f"does not load: {pipeline.error}")
        loaded = time.perf_counter()
        try:
            smoke_test(pipeline)
        except SmokeFailed as exc:
            pipeline.close()
            raise versions.UpdateFailed("smoke-failed", f"smoke test failed: {exc}") from None
        self.took.update(load=loaded - t, smoke=time.perf_counter() - loaded)
        return pipeline

    async def _switch(self, pipeline, brief: dict[str, str]) -> None:
        old = swap.switch(self.plane, pipeline)
        self.metrics.running_version.clear()
        self.metrics.running_version.labels(brief["version"]).set(1)
        self.status.running = brief
        log.info("update: now serving version %s (%s)", brief["version"], brief["digest"][:19])
        await swap.retire(self.plane, old, float(self.settings.shutdown_timeout))

    async def _probation(self, name: str) -> str | None:
        """Watch the new version's answers; why it failed, or None when it held."""
        seen = _Outcomes(self.metrics, name)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.update.probation_seconds
        while loop.time() < end:
            await asyncio.sleep(min(0.5, self.update.probation_seconds))
            total, bad = seen.since()
            if total >= self.update.min_requests and bad / total > self.update.max_error_rate:
                return (
                    f"error rate {bad}/{total} above {self.update.max_error_rate:g} "
                    "(EDGEPIPE_ENGINE_UPDATE_MAX_ERROR_RATE)"
                )
        return None

    async def _roll_back(self, digest: str, previous: dict[str, str], why: str) -> None:
        try:
            old = await asyncio.to_thread(
                versions.from_cache, self.cache, self.ref, previous["digest"], self.key
            )
            pipeline = await asyncio.to_thread(self._load, old)
        except versions.UpdateFailed as exc:
            log.error("update: cannot go back to %s: %s", previous["version"], exc)
            self._mark_bad(digest, why)
            self.status.set("RolledBack", f"{why}; going back failed: {exc}")
            self._result("rolled-back")
            return
        await self._switch(pipeline, previous)
        # An offline restart starts on it (a restart online may have made the bad one so).
        await asyncio.to_thread(
            versions.make_last_good, self.cache, self.url, self.ref, previous["digest"]
        )
        self.status.previous = None
        self._mark_bad(digest, why)
        self.status.set("RolledBack", why)
        self._result("rolled-back")

    def _failed(self, digest: str, exc: versions.UpdateFailed) -> None:
        if exc.retry:  # the registry or the disk: the version may be fine; back off, retry
            self.retries += 1
            if exc.result == "registry-down":
                self.client = None
            self.status.set("Downloading", f"{exc} (will retry)")
        else:
            self._mark_bad(digest, str(exc))
            self.status.set("Rejected", str(exc))  # refused before any switch
        self._result(exc.result.lower(), str(exc))

    def _mark_bad(self, digest: str, why: str) -> None:
        self.record.bad[digest] = why
        self.record.save(self.record_file)

    def _keep(self, digest: str) -> None:
        versions.make_last_good(self.cache, self.url, self.ref, digest)
        # + 1: the URL's entry repeats the running version's own.
        prune_cache(self.cache, self.settings.cache_versions + 1)

    def _result(self, result: str, reason: str | None = None) -> None:
        self.metrics.update_total.labels(result).inc()
        if reason:
            log.warning("update: %s: %s", result, reason)
            self.status.polled(result)


class _Outcomes:
    """Requests, and failed ones (5xx or with failed validations), since it was made."""

    def __init__(self, metrics: Metrics, pipeline: str) -> None:
        self.metrics, self.pipeline = metrics, pipeline
        self.start = self._now()

    def _now(self) -> tuple[float, float]:
        total = bad = 0.0
        for metric in self.metrics.requests.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels["pipeline"] == self.pipeline:
                    total += s.value
                    bad += s.value if s.labels["status"].startswith("5") else 0
        for metric in self.metrics.check_failures.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels["pipeline"] == self.pipeline:
                    bad += s.value
        return total, bad

    def since(self) -> tuple[int, int]:
        total, bad = self._now()
        n = int(total - self.start[0])
        return n, min(n, int(bad - self.start[1]))


UPDATER = web.AppKey("updater", Updater)


def context(
    plane: Callable[[], DataPlane], settings: Settings, metrics: Metrics
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that runs the updater and the status heartbeat (edge mode)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        dp = plane()
        updater = _build(settings, settings.update, dp, metrics)
        app[UPDATER] = updater
        tasks = [asyncio.create_task(updater.run())]
        heartbeat = _heartbeat(settings, updater)
        if heartbeat is not None:
            tasks.append(asyncio.create_task(heartbeat.run()))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return ctx


def _build(settings: Settings, update: UpdatePolicy, plane: DataPlane, metrics: Metrics):
    edge = settings.edge
    assert edge is not None
    ref = reference(edge)
    name = next(iter(plane.pipelines))
    digest = versions.running_digest(settings.cache_dir, str(ref)) or ""
    version = plane.pipelines[name].config.version or ""
    status = edgestatus.EdgeStatus(
        edge=_edge_name(settings),
        pipeline=name,
        running={"version": version, "digest": digest},
        poll_seconds=update.seconds,
    )
    metrics.running_version.labels(version).set(1)
    return Updater(settings, update, plane, metrics, status)


def _edge_name(settings: Settings) -> str:
    from .logservice import host_edge_name

    return settings.edge_name or host_edge_name()


def _heartbeat(settings: Settings, updater: Updater) -> edgestatus.Heartbeat | None:
    ref, login = updater.ref, settings.registry_login
    target = edgestatus.StatusTarget(
        registry=ref.registry,
        credentials=login.credentials(ref.registry),
        plain_http=login.plain_http or oci.is_loopback(ref.registry),
        repository=fleet.status_repository(edgelog.prefix_of(str(ref)), updater.status.pipeline),
    )
    return edgestatus.Heartbeat(updater.status, target, updater.update.heartbeat_seconds)


async def status_endpoint(request: web.Request) -> web.Response:
    """GET /status: what runs, what ran before, the update state and the last poll."""
    return web.json_response(request.app[UPDATER].status.doc())

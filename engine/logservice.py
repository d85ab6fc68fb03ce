"""The inference log's life in a running engine: writing segments, uploading them, serving them.

Writing runs on one thread (segments stay in order), uploading on another (a registry
that hangs never holds up writing). With the registry down, segments wait in
``pending/`` and go up oldest first once it answers again; a push is content-addressed,
so a segment pushed again after a lost answer is not a duplicate. Without credentials
that may push, logs stay local, and the engine says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edgepipe import edgelog, oci

from .errors import BadRequest
from .inferencelog import InferenceLog, LogSettings
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("edgepipe.engine")


@dataclass(frozen=True)
class UploadTarget:
    """Where an edge's segments go: ``<prefix>/logs/<pipeline>/<edge>`` on its registry."""

    registry: str
    credentials: oci.Credentials
    plain_http: bool
    repository: str
    pipeline: str
    edge: str


class LogService:
    def __init__(
        self, ilog: InferenceLog, target: UploadTarget | None, upload_seconds: float
    ) -> None:
        self.log = ilog
        self.target = target
        self.upload_seconds = upload_seconds
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="inference-log")
        self.uploader = ThreadPoolExecutor(1, thread_name_prefix="log-upload")
        self.wake = asyncio.Event()
        self.enabled = target is not None
        self.checked = False  # push rights probed
        self.down_since: float | None = None
        self.backlog = (0, 0)  # segments, records uploaded since the registry came back

    # -- the request path ------------------------------------------------------------------

    def add(self, *record: Any) -> None:
        """``InferenceLog.add``, and the buffer written once it is full."""
        if self.log.add(*record):
            self.flush_soon()

    def flush_soon(self) -> asyncio.Future:
        batch = self.log.take()
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self.writer, self.log.write, batch)
        done.add_done_callback(lambda _: self.wake.set())
        return done

    # -- background ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.target is None:
            return
        if not (self.target.credentials.username and self.target.credentials.password):
            self.enabled = False
            log.warning(
                "inference logs stay local in %s: no registry credentials to push them with "
                "(OCI_USERNAME and OCI_PASSWORD, with push rights on %s)",
                self.log.settings.directory,
                self.target.repository,
            )
            return
        log.info(
            "inference logs of edge %r upload to %s/%s",
            self.target.edge,
            self.target.registry,
            self.target.repository,
        )

    async def run(self) -> None:
        """Write the buffer every segment interval; upload after each write and now and then."""
        interval = self.log.settings.segment_seconds
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + interval
        while True:
            timeout = max(0.0, min(next_flush - loop.time(), self.upload_seconds))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            self.wake.clear()
            if loop.time() >= next_flush:
                next_flush = loop.time() + interval
                if self.log.buffer:
                    await self.flush_soon()
            if self.enabled:
                await loop.run_in_executor(self.uploader, self.upload_pass)

    async def close(self) -> None:
        """Write what is buffered; one last upload attempt, briefly."""
        await self.flush_soon()
        if self.enabled:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(TimeoutError, oci.OciError):
                async with asyncio.timeout(5):
                    await loop.run_in_executor(self.uploader, self.upload_pass)
        self.writer.shutdown(wait=True)
        self.uploader.shutdown(wait=False, cancel_futures=True)

    # -- on the upload thread --------------------------------------------------------------

    def upload_pass(self) -> None:
        t = self.target
        assert t is not None
        if self.checked and not self.log.pending():
            return  # nothing waits: no request to the registry
        try:
            client = oci.Client(t.registry, t.credentials, plain_http=t.plain_http)
            if not self.checked:
                client.check_push(t.repository)
                self.checked = True
            for f in self.log.pending():
                try:
                    data = f.path.read_bytes()
                except FileNotFoundError:
                    continue  # the cap took it
                edgelog.push_segment(
                    client,
                    t.repository,
                    data,
                    first_ms=f.first_ms,
                    last_ms=f.last_ms,
                    records=f.records,
                    pipeline=t.pipeline,
                    edge=t.edge,
                )
                self.log.mark_uploaded(f)
                self.log.metrics.log_uploaded.inc(f.records)
                self.backlog = (self.backlog[0] + 1, self.backlog[1] + f.records)
            if self.down_since is not None:
                took = time.monotonic() - self.down_since
                log.info(
                    "registry back: %d waiting segments (%d records) uploaded, %.1f s after "
                    "the outage began",
                    *self.backlog,
                    took,
                )
                self.down_since = None
        except oci.RegistryUnavailable as exc:
            self.log.metrics.log_upload_failures.inc()
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("registry unreachable (%s); inference log segments wait on disk", exc)
            self.backlog = (0, 0)
        except oci.AuthError as exc:
            self.enabled = False
            log.warning(
                "inference logs stay local in %s: the registry refused to take them (%s)",
                self.log.settings.directory,
                exc,
            )
        except oci.OciError as exc:
            self.log.metrics.log_upload_failures.inc()
            log.warning("inference log upload failed: %s; retrying", exc)

    # -- GET /logs -------------------------------------------------------------------------

    async def read(self, since: str | None, limit: str | None, as_json: bool) -> tuple[Any, bool]:
        """The oldest ``limit`` records from ``since`` on (as a table, or as JSON rows),
        and whether there are more; read and converted off the event loop."""
        since_ms = parse_since(since)
        count = parse_limit(limit)
        buffered = list(self.log.buffer)

        def read() -> tuple[Any, bool]:
            table = self.log.read(since_ms, buffered)
            more = table.num_rows > count
            table = table.slice(0, count)
            return (edgelog.records_json(table) if as_json else table), more

        return await asyncio.get_running_loop().run_in_executor(self.writer, read)


# One answer holds at most this many records unless ``limit`` asks for more; the next page
# starts at the last record's time (``since``).
DEFAULT_LIMIT = 10_000


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"limit={raw!r}: expected a whole number of records, at least 1", "limit")
    return int(raw)


def parse_since(raw: str | None) -> int | None:
    """``since``: an ISO 8601 time (``2026-11-27T10:00:00Z``) or Unix seconds -> ms."""
    try:
        return edgelog.since_ms(raw)
    except ValueError as exc:
        raise BadRequest(str(exc).replace("since ", "since=", 1), "since") from None


def build(settings: Settings, pipelines: list[str], metrics: Metrics) -> LogService | None:
    """The log service the settings ask for: None when logging is off; uploading in edge
    mode, to the publish's prefix on the pipeline's registry."""
    if not settings.inference_log_on:
        return None
    edge = settings.edge_name or host_edge_name()
    ilog = InferenceLog(
        LogSettings(
            directory=settings.log_dir or settings.cache_dir / "logs",
            edge=edge,
            cap_bytes=settings.local_storage,
            segment_records=settings.log_segment_records,
            segment_seconds=settings.log_segment_seconds,
            inputs=settings.log_inputs,
        ),
        metrics,
    )
    target = None
    if settings.edge is not None and pipelines:
        from .edge import reference

        ref = reference(settings.edge)
        login = settings.registry_login
        target = UploadTarget(
            registry=ref.registry,
            credentials=login.credentials(ref.registry),
            plain_http=oci.speaks_plain_http(ref.registry, login.plain_http or None),
            repository=edgelog.repository(edgelog.prefix_of(str(ref)), pipelines[0], edge),
            pipeline=pipelines[0],
            edge=edge,
        )
    return LogService(ilog, target, settings.log_upload_seconds)


def host_edge_name() -> str:
    """The host name as an edge name (lower case, other characters as '-')."""
    name = re.sub(r"[^a-z0-9-]+", "-", LogSettings.default_edge().lower()).strip("-")
    return name[:63].strip("-") or "edge"


@contextlib.asynccontextmanager
async def lifecycle(service: LogService) -> AsyncIterator[None]:
    await service.start()
    task = asyncio.create_task(service.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await service.close()

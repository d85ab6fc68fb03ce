"""The operator's start: kopf's own settings, the objects every handler shares (in the
memo), the edge poll; importing this module registers every handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from edgepipe.resources import GROUP

from . import (  # noqa: F401 - registers the handlers
    cache,
    edges,
    engine_events,
    pipelines,
    publish_records,
    publishes,
    readiness,
)
from .kube import Kube, credentials, open_session
from .settings import OperatorSettings

SPARE_CONNECTIONS = 4  # kopf's patches and events, the edge poll


def operator_memo(settings: OperatorSettings, namespaces: list[str]) -> kopf.Memo:
    """What the handlers share, made once at start: the settings read from the environment
    and the namespaces watched (empty: every namespace)."""
    return kopf.Memo(settings=settings, watch_namespaces=namespaces)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Run by kopf's own CLI (`kopf run -m edgepipe_operator.startup`), nobody passed the
    # settings: the defaults, since no handler reads the environment.
    ours: OperatorSettings = memo.setdefault("settings", OperatorSettings.from_env({}))
    # Handler progress lives in annotations under our own prefix, not in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Only warnings of kopf's own log lines become Events: at INFO every "Handler ...
    # succeeded" line was an Event (1-2 writes per Pipeline per rollout, measured in
    # `make scale`). Our transitions are posted as Events explicitly (kopf.event).
    settings.posting.level = logging.WARNING
    # Handlers run on this many threads, each making one API call at a time. (kopf's own
    # per-object workers stay unlimited: a limit deadlocks a restart, since workers waiting
    # for the indices to fill hold every slot the indexing needs.)
    settings.execution.max_workers = ours.workers
    settings.posting.worker_limit = ours.workers
    _kube(memo)
    # Watching named namespaces, the operator has Roles there and no cluster-wide access:
    # kopf then takes the names as they are and scans CRDs once, instead of watching
    # namespaces and CRDs cluster-wide (which would need a ClusterRole).
    if memo.get("watch_namespaces"):
        settings.scanning.disabled = True
    memo.applied = cache.Applied()
    memo.pipelines = cache.Pipelines()
    # Asking unready engines why needs pod IPs this process can reach.
    memo.probe = readiness.probe_ready if ours.probe_engines else None


def _kube(memo: kopf.Memo) -> Kube:
    """The handlers' client; login (which may run before configure) gives it its session."""
    if "kube" not in memo:
        memo.kube = Kube(asyncio.get_running_loop())
    return memo.kube


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.AiohttpSession:
    """One aiohttp session for kopf, the informers and the handlers alike (kopf logs in
    again, and calls this again, when the apiserver refuses the credentials). The first
    time, the session the informers' startup opened."""
    early = memo.pop("early_login", None)
    if early is not None:
        session, info = early
    else:
        info = credentials(settings)
        session = open_session(info, connection_limit(memo))
        _kube(memo).use(session, info.server)
    return kopf.AiohttpSession(
        aiohttp_session=session, server=info.server, default_namespace=info.default_namespace
    )


def connection_limit(memo: kopf.Memo) -> int:
    """The pool's bound: one connection per watch stream (kopf's and the informers'),
    plus one per handler thread (the dispatcher's syncs run on the same threads), plus a
    few for kopf's own patches and events and the edge poll.

    A bound can only deadlock if every connection is held by someone waiting for another
    request to finish. Nobody does: a watch stream holds its connection for as long as it
    runs but waits only for the apiserver, and every other request (a handler's call, one
    of kopf's patches, an event, an informer's LIST page) holds one only until its own
    answer. With more connections than streams, some request always finishes and frees
    one; the rest queue (FIFO) in the meantime. The informers' first LISTs run before any
    stream is open (in a startup handler), and an informer holds a stream or a LIST page,
    never both. (kopf's ``worker_limit`` deadlocked because its slots were held by workers
    waiting for the indices, which needed slots to fill.)
    """
    ours: OperatorSettings | None = memo.get("settings")
    workers = ours.workers if ours else OperatorSettings.model_fields["workers"].default
    namespaces = max(1, len(memo.get("watch_namespaces") or []))
    # + the cluster-wide CRD and namespace scans kopf runs when it may
    streams = (watched_resources() + len(engine_events.KINDS)) * namespaces
    return streams + 2 + workers + SPARE_CONNECTIONS


def watched_resources() -> int:
    """How many kinds kopf watches for our handlers (each is one stream per namespace)."""
    registry = kopf.get_default_registry()
    kinds = set()
    for part in ("_indexing", "_watching", "_spawning", "_changing"):
        if (handlers := getattr(registry, part, None)) is not None:
            kinds |= set(handlers.get_all_selectors())
    return len(kinds) or 16  # (kopf's registry changed: a generous guess)


# Registered after configure, so they run after it: they read the memo's settings.
@kopf.on.startup()
async def start_informers(
    settings: kopf.OperatorSettings, memo: kopf.Memo, pipeline_index: kopf.Index, **_: Any
) -> None:
    """The engine objects' informers, listed before returning: kopf runs no handler
    before its startup handlers are done, and the reconciler reads the stores as whole.
    (kopf logs in only after them too: the LISTs need the session now.)"""
    if _kube(memo).session is None:
        info = credentials(settings)
        session = open_session(info, connection_limit(memo))
        memo.kube.use(session, info.server)
        memo.early_login = (session, info)
    ours: OperatorSettings = memo.settings
    run = readiness.sync_engine(memo, pipeline_index)
    executor = settings.execution.executor
    namespaces = memo.get("watch_namespaces") or []
    memo.engine = engine_events.engine_watch(memo.kube, namespaces, run, executor)
    await memo.engine.start(consumers=ours.workers)


@kopf.on.cleanup()
async def stop_informers(memo: kopf.Memo, **_: Any) -> None:
    if (engine := memo.get("engine")) is not None:
        await engine.stop()


@kopf.on.startup()
async def start_edge_poll(memo: kopf.Memo, edge_publish_index: kopf.Index, **_: Any) -> None:
    memo.edge_poll = asyncio.create_task(edges.poll(memo, edge_publish_index))


@kopf.on.cleanup()
async def stop_edge_poll(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("edge_poll")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""The operator's start: kopf's own settings, the objects every handler shares (in the
memo), the edge poll; importing this module registers every handler."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from edgepipe.resources import GROUP

from . import (  # noqa: F401 - registers the handlers
    cache,
    edges,
    pipelines,
    publish_records,
    publishes,
    readiness,
)
from .kube import Kube
from .settings import OperatorSettings


def operator_memo(settings: OperatorSettings, namespaces: list[str]) -> kopf.Memo:
    """What the handlers share, made once at start: the settings read from the environment
    and the namespaces watched (empty: every namespace)."""
    return kopf.Memo(settings=settings, watch_namespaces=namespaces)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Run by kopf's own CLI (`kopf run -m edgepipe_operator.startup`), nobody passed the
    # settings: the defaults, since no handler reads the environment.
    ours: OperatorSettings = memo.setdefault("settings", OperatorSettings.from_env({}))
    # Handler progress lives in annotations under our own prefix, not in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = 20  # logging.INFO: events for transitions, not debug chatter
    # Handlers run on this many threads, each with its own API connection. (kopf's own
    # per-object workers stay unlimited: a limit deadlocks a restart, since workers waiting
    # for the indices to fill hold every slot the indexing needs.)
    settings.execution.max_workers = ours.workers
    settings.posting.worker_limit = ours.workers
    memo.kube = Kube(pool_size=ours.workers + 2)
    # Watching named namespaces, the operator has Roles there and no cluster-wide access:
    # kopf then takes the names as they are and scans CRDs once, instead of watching
    # namespaces and CRDs cluster-wide (which would need a ClusterRole).
    if memo.get("watch_namespaces"):
        settings.scanning.disabled = True
    memo.applied = cache.Applied()
    # Asking unready engines why needs pod IPs this process can reach.
    memo.probe = readiness.probe_ready if ours.probe_engines else None


# Registered after configure, so it runs after it: the poll reads the memo's settings.
@kopf.on.startup()
async def start_edge_poll(memo: kopf.Memo, **_: Any) -> None:
    memo.edge_poll = asyncio.create_task(edges.poll(memo))


@kopf.on.cleanup()
async def stop_edge_poll(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("edge_poll")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

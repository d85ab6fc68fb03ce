"""The engine objects' informers and the status syncs their changes call for.

Six informers (informers.py) follow the objects the operator owns: Deployments, pods,
Services, ConfigMaps, ControllerRevisions and autoscalers, in each watched namespace or
cluster-wide. Their stores (stores.py) answer the reconciler's questions (is this manifest
applied? which revisions are kept? how are the pods?) without a LIST.

A Deployment's or autoscaler's change, or a pod's with a problem to report, makes its
Pipeline's status follow (readiness.sync_engine). The ``Dispatcher`` keeps one piece of
pending work per Pipeline, the newest of each kind of news (a newer event of the same
Pipeline replaces the queued one: memory is O(Pipelines with work), not O(events)), and a
fixed number of consumers run the syncs on the handlers' threads, one at a time per
Pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import cache, health, stores
from .builders import PIPELINE_LABEL
from .informers import Informer, Kind
from .kube import Kube

log = logging.getLogger(__name__)

PipelineKey = tuple[str, str]  # (namespace, pipeline)


def selector(labels: dict[str, Any]) -> str:
    """A label selector's text (kopf.PRESENT: the label is there, whatever its value)."""
    return ",".join(k if v is kopf.PRESENT else f"{k}={v}" for k, v in labels.items())


DEPLOYMENTS = Kind("/apis/apps/v1", "deployments", "Deployment", selector(cache.MANAGED))
PODS = Kind("/api/v1", "pods", "Pod", selector(cache.ENGINE_OBJECTS))
SERVICES = Kind("/api/v1", "services", "Service", selector(cache.MANAGED))
CONFIGMAPS = Kind("/api/v1", "configmaps", "ConfigMap", selector(cache.MANAGED))
REVISIONS = Kind(
    "/apis/apps/v1", "controllerrevisions", "ControllerRevision", selector(cache.REVISIONS)
)
HPAS = Kind(
    "/apis/autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
    selector(cache.MANAGED),
)  # fmt: skip
KINDS = (DEPLOYMENTS, PODS, SERVICES, CONFIGMAPS, REVISIONS, HPAS)


@dataclass
class Work:
    """A Pipeline's pending news: its Deployment's and autoscaler's newest states, and
    the object an Event about a failed sync is posted on (the newest one that changed)."""

    deployment: dict[str, Any] | None = None
    hpa: dict[str, Any] | None = None
    subject: dict[str, Any] = field(default_factory=dict)


class Dispatcher:
    """Pending work per Pipeline, run by ``consumers`` tasks on ``executor``'s threads."""

    def __init__(self, run: Callable[[PipelineKey, Work], None], executor: Executor | None):
        self.run, self.executor = run, executor
        self.pending: dict[PipelineKey, Work] = {}
        self.running: set[PipelineKey] = set()
        self.ready: asyncio.Queue[PipelineKey] = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    def offer(self, obj: dict[str, Any]) -> None:
        """An engine object changed (an informer's ``on_change``): note its news, if any."""
        meta = obj.get("metadata") or {}
        pipeline = (meta.get("labels") or {}).get(PIPELINE_LABEL)
        kind = obj.get("kind")
        if pipeline is None or (kind == "Pod" and not pod_news(obj)):
            return
        key = (meta.get("namespace") or "", pipeline)
        work = self.pending.get(key)
        if work is None:
            work = self.pending[key] = Work()
            if key not in self.running:
                self.ready.put_nowait(key)
        if kind == "Deployment":
            work.deployment = stores.slim_deployment(obj)
        elif kind == "HorizontalPodAutoscaler":
            work.hpa = stores.slim_hpa(obj)
        work.subject = stores.reference(obj, kind or "", obj.get("apiVersion") or "")

    def start(self, consumers: int) -> None:
        self.tasks = [asyncio.create_task(self.consume()) for _ in range(consumers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self.ready.get()
            work = self.pending.pop(key, None)
            if work is None:
                continue
            self.running.add(key)
            try:
                await loop.run_in_executor(self.executor, self.run, key, work)
            except Exception:  # one Pipeline's failure must not stop the others'
                log.exception("syncing the status of Pipeline %s/%s", *key)
            finally:
                self.running.discard(key)
                if key in self.pending:
                    self.ready.put_nowait(key)


def pod_news(pod: dict[str, Any]) -> bool:
    """A pod's change is news when it has a problem to report (one that starts or becomes
    ready changes its Deployment's status too: that event carries the news)."""
    return bool(health.pod_problem(pod) or health.unready_running_pods([stores.slim_pod(pod)]))


@dataclass
class EngineWatch:
    """The stores, the informers that fill them and the dispatcher their changes feed."""

    applied: stores.ByPlural
    revisions: stores.Store
    pods: stores.Store
    dispatcher: Dispatcher
    informers: list[Informer]
    tasks: list[asyncio.Task] = field(default_factory=list)

    def indices(self) -> dict[str, Any]:
        """The stores under the names the reconciler's handlers know them by."""
        return {
            "applied_index": self.applied,
            "revision_index": self.revisions,
            "pod_index": self.pods,
        }

    async def start(self, consumers: int) -> None:
        """Start every informer and wait for each one's first LIST (the handlers read the
        stores as complete), then the dispatcher's consumers."""
        self.tasks = [asyncio.create_task(i.run()) for i in self.informers]
        synced = asyncio.gather(*(i.synced.wait() for i in self.informers))
        done, _ = await asyncio.wait([synced, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        if synced not in done:  # an informer died (a bug): say so rather than wait forever
            synced.cancel()
            await self.stop()
            for task in done:
                task.result()
        self.dispatcher.start(consumers)

    async def stop(self) -> None:
        await self.dispatcher.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def engine_watch(
    kube: Kube,
    namespaces: list[str],
    run: Callable[[PipelineKey, Work], None],
    executor: Executor | None,
) -> EngineWatch:
    """Informers for every engine kind in each namespace (none named: cluster-wide)."""
    applied = {kind.plural: stores.Digests(kind.plural) for kind in KINDS}
    revisions = stores.Store(stores.revision_summary)
    pods = stores.Store(stores.pod_entry)
    dispatcher = Dispatcher(run, executor)
    fed: dict[Kind, list[stores.Sink]] = {
        DEPLOYMENTS: [applied["deployments"]],
        PODS: [pods],
        SERVICES: [applied["services"]],
        CONFIGMAPS: [applied["configmaps"]],
        REVISIONS: [applied["controllerrevisions"], revisions],
        HPAS: [applied["horizontalpodautoscalers"]],
    }
    news = {DEPLOYMENTS, PODS, HPAS}
    informers = [
        Informer(kube, kind, namespace, fed[kind], dispatcher.offer if kind in news else None)
        for namespace in namespaces or [None]
        for kind in KINDS
    ]
    return EngineWatch(stores.ByPlural(applied), revisions, pods, dispatcher, informers)

"""The operator's informers against the real test apiserver: the stores follow creates,
updates and deletes; a watch from a compacted version (410 Gone) lists again and drops
what vanished meanwhile; a Pipeline's many quick changes coalesce into a few syncs, the
last of which sees the last state."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import pytest
from edgepipe_operator import engine_events, stores
from edgepipe_operator.builders import PIPELINE_LABEL
from edgepipe_operator.informers import Gone, Informer
from edgepipe_operator.kube import Kube, credentials, open_session

from tests.helpers.kube import wait_for

MANAGED = {"app.kubernetes.io/managed-by": "edgepipe-operator"}


class Loop:
    """An event loop on its own thread, where the informers run (as on kopf's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def kube(cluster: dict) -> Iterator[tuple[Loop, Kube]]:
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cluster["kubeconfig"])
    loop = Loop()

    async def connect() -> Kube:
        info = credentials(kopf.OperatorSettings())
        client = Kube(asyncio.get_running_loop())
        client.use(open_session(info, 8), info.server)
        return client

    client = loop.run(connect())
    yield loop, client
    assert client.session is not None
    loop.run(client.session.close())
    loop.close()
    if old is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = old


def configmap(name: str, digest: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": MANAGED,
            "annotations": {stores.APPLIED_ANNOTATION: digest},
        },
        "data": {"pipeline.json": "x" * 2000},
    }


def configmap_informer(client: Kube, namespace: str) -> tuple[Informer, stores.Digests]:
    store = stores.Digests("configmaps")
    return Informer(client, engine_events.CONFIGMAPS, namespace, [store]), store


def digest_of(store: stores.Digests, namespace: str, name: str) -> list[str] | None:
    return store.get(("configmaps", namespace, name))


def test_the_store_follows_creates_updates_and_deletes(kube, kubectl, namespace) -> None:
    loop, client = kube
    kubectl.apply(configmap("before", "d0"))
    kubectl.apply({**configmap("unmanaged", "u"), "metadata": {"name": "unmanaged"}})
    informer, store = configmap_informer(client, namespace)
    task = asyncio.run_coroutine_threadsafe(informer.run(), loop.loop)
    try:
        wait_for("the first LIST", lambda: informer.synced.is_set() or None, timeout=10)
        assert digest_of(store, namespace, "before") == ["d0"]  # listed before the watch
        assert digest_of(store, namespace, "unmanaged") is None  # not ours: not selected
        kubectl.apply(configmap("after", "d1"))
        wait_for("a create", lambda: digest_of(store, namespace, "after"), timeout=10)
        kubectl.apply(configmap("after", "d2"))
        wait_for("an update", lambda: digest_of(store, namespace, "after") == ["d2"] or None)
        kubectl("delete", "configmap", "before")
        wait_for("a delete", lambda: digest_of(store, namespace, "before") is None or None)
        assert ("configmaps", namespace, "after") in store
        assert set(informer.known) == {(namespace, "after")}
        # Only a few strings per object: the 2 KB of data is not kept.
        assert store.of == {(namespace, "after"): "d2"}
        assert informer.lists == 1
    finally:
        task.cancel()


class GoneOnce(Informer):
    """An informer whose first watch ends in 410 Gone once the test says so. (The test
    apiserver, 1.34, serves a watch from any old version out of its watch cache, even after
    etcd compacted it: a real 410 needs the cache's window to have moved past the version,
    thousands of events. The LISTs and the watch after it are the apiserver's own.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume = threading.Event()

    async def watch(self, version: str) -> tuple[str, bool]:
        if self.lists == 1:
            await asyncio.to_thread(self.resume.wait, 20)
            raise Gone("too old resource version")
        return await super().watch(version)


def test_a_watch_gone_lists_again_and_drops_what_vanished(kube, kubectl, namespace) -> None:
    loop, client = kube
    for name in ("stays", "goes"):
        kubectl.apply(configmap(name, "d0"))
    store = stores.Digests("configmaps")
    changed: list[str] = []
    informer = GoneOnce(
        client,
        engine_events.CONFIGMAPS,
        namespace,
        [store],
        lambda o: changed.append(o["metadata"]["name"]),
    )
    task = asyncio.run_coroutine_threadsafe(informer.run(), loop.loop)
    try:
        wait_for("the first LIST", lambda: informer.synced.is_set() or None, timeout=10)
        assert digest_of(store, namespace, "goes") == ["d0"] and changed == []
        # While the watch missed them: one object deleted, one changed, one created.
        kubectl("delete", "configmap", "goes")
        kubectl.apply(configmap("stays", "d1"))
        kubectl.apply(configmap("new", "d0"))
        informer.resume.set()
        wait_for("the LIST after 410", lambda: informer.lists == 2 or None, timeout=10)
        wait_for(
            "the deletion the watch missed",
            lambda: digest_of(store, namespace, "goes") is None or None,
        )
        assert digest_of(store, namespace, "stays") == ["d1"]
        assert digest_of(store, namespace, "new") == ["d0"]
        assert sorted(changed) == ["new", "stays"]  # news: only what changed meanwhile
        assert set(informer.known) == {(namespace, "stays"), (namespace, "new")}
        # ... and the watch after it is live again.
        kubectl.apply(configmap("later", "d0"))
        wait_for(
            "an event after the relist", lambda: digest_of(store, namespace, "later"), timeout=10
        )
    finally:
        informer.resume.set()
        task.cancel()


def deployment(name: str, generation_bump: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{name}-engine",
            "labels": {**MANAGED, PIPELINE_LABEL: name},
        },
        "spec": {
            "replicas": 0,  # no pods: only the Deployment's own events
            "minReadySeconds": generation_bump,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/instance": name}},
                "spec": {"containers": [{"name": "engine", "image": "edgepipe:test"}]},
            },
        },
    }


def test_a_pipelines_quick_changes_coalesce(kube, kubectl, namespace) -> None:
    loop, client = kube
    runs: list[tuple[tuple[str, str], int]] = []

    gate = threading.Event()

    def sync(key: tuple[str, str], work: engine_events.Work) -> None:
        assert work.deployment is not None
        runs.append((key, work.deployment["metadata"]["generation"]))
        gate.wait(30)  # a slow status sync: the changes arriving meanwhile wait

    executor = ThreadPoolExecutor(2)
    dispatcher = engine_events.Dispatcher(sync, executor)
    events: list[int] = []

    def offer(obj: dict[str, Any]) -> None:
        events.append(obj["metadata"]["generation"])
        dispatcher.offer(obj)

    informer = Informer(client, engine_events.DEPLOYMENTS, namespace, [], on_change=offer)

    async def start() -> asyncio.Task:
        task = asyncio.create_task(informer.run())
        await informer.synced.wait()
        dispatcher.start(2)
        return task

    task = loop.run(start())
    try:
        updates = 15
        for bump in range(1, updates + 1):
            kubectl.apply(deployment("coalesced", bump))
        final = kubectl.get("deployment", "coalesced-engine")["metadata"]["generation"]
        wait_for("the last change seen", lambda: final in events or None, timeout=15)
        gate.set()  # the first sync ends: every change since waits as one
        key = (namespace, "coalesced")
        wait_for("the last state synced", lambda: (key, final) in runs or None, timeout=15)
        time.sleep(0.5)
        assert dispatcher.pending == {} and dispatcher.running == set()
        assert runs[-1] == (key, final)  # the last sync saw the last state
        # Each apply is an event or two (the spec's, then the controller's status); the
        # first sync took them all, and the rest waited as one piece of work (or two, when
        # the controller's last status came after).
        assert len(events) >= updates and len(runs) <= 3, (events, runs)
        generations = [g for _, g in runs]
        assert generations == sorted(generations)  # one at a time per Pipeline, in order
    finally:
        gate.set()
        loop.run(dispatcher.stop())
        task.cancel()
        executor.shutdown(wait=False)

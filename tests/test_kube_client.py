"""The operator's thin Kubernetes client (edgepipe_operator/kube.py) against the real test
apiserver: kubeconfig login, server-side apply, 404s, the resourceVersion precondition's
409 and the readiness sync's retry after it, a refused token, an apiserver that is gone."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
from edgepipe_operator.kube import ApiError, Kube, Unreachable, credentials, open_session
from edgepipe_operator.slim import KUBECTL_COPY, OWN_PARSE

from tests.helpers.pipelines import pipeline

pytestmark = pytest.mark.cluster


def _client(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kube]:
    """A Kube on an event loop of its own thread, as kopf's loop runs beside the handlers'
    threads; logged in from ``kubeconfig``."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    info = credentials(kopf.OperatorSettings())

    async def login() -> Kube:
        kube = Kube(loop, timeout=10)
        kube.use(open_session(info, limit=4), info.server)
        return kube

    kube = asyncio.run_coroutine_threadsafe(login(), loop).result()
    try:
        yield kube
    finally:
        asyncio.run_coroutine_threadsafe(kube.session.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def kube(cluster: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kube]:
    yield from _client(cluster["kubeconfig"], monkeypatch)


def configmap(name: str, namespace: str, **data: str) -> dict:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_apply_read_delete(kube: Kube, kubectl, namespace: str) -> None:
    first = kube.apply(configmap("c", namespace, a="1"))
    again = kube.apply(configmap("c", namespace, a="1"))  # server-side apply: idempotent
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed = kube.apply(configmap("c", namespace, a="2"))
    assert changed["data"] == {"a": "2"}
    managers = {m["manager"] for m in changed["metadata"]["managedFields"]}
    assert managers == {"edgepipe-operator"}
    assert kubectl.get("configmap", "c")["data"] == {"a": "2"}
    assert kube.delete("ConfigMap", "c", namespace) is True
    assert kube.delete("ConfigMap", "c", namespace) is False  # 404: already gone
    assert kube.read_deployment("missing", namespace) is None
    assert kube.read_secret("missing", namespace) is None
    assert kube.get_custom("pipelines", "missing", namespace) is None
    with pytest.raises(ValueError, match="cannot apply a Namespace"):
        kube.apply({"kind": "Namespace", "metadata": {"name": "x", "namespace": namespace}})


def test_status_precondition_conflicts(kube: Kube, kubectl, namespace: str) -> None:
    kubectl.apply(pipeline("p", deployed=False))
    obj = kube.get_custom("pipelines", "p", namespace)
    assert [p["metadata"]["name"] for p in kube.list_custom("pipelines", namespace)] == ["p"]
    version = obj["metadata"]["resourceVersion"]
    written = kube.patch_status("pipelines", "p", namespace, {"phase": "Pending"}, version)
    assert written["status"]["phase"] == "Pending"
    with pytest.raises(ApiError) as stale:  # somebody (here: we) wrote since `version`
        kube.patch_status("pipelines", "p", namespace, {"phase": "Error"}, version)
    assert stale.value.status == 409 and "Conflict" in str(stale.value)
    assert kube.get_custom("pipelines", "p", namespace)["status"]["phase"] == "Pending"


def test_readiness_sync_starts_over_after_a_conflict(kube: Kube, kubectl, namespace) -> None:
    """The status sync holds a Pipeline read before another writer's write: its write gets
    409, it reads again and writes on the fresh object."""
    from edgepipe_operator.readiness import Sync, sync_from_deployment

    kubectl.apply(pipeline("r"))
    obj = kube.get_custom("pipelines", "r", namespace)
    obj = kube.patch_status(
        "pipelines", "r", namespace, {"observedGeneration": obj["metadata"]["generation"]}
    )
    stale = json.loads(json.dumps(obj))
    kube.patch_status("pipelines", "r", namespace, {"message": "someone else"})
    deployment = {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {}}
    written = sync_from_deployment(
        Sync(kube, "r", namespace, pipeline=stale, deployment=deployment, pods=[])
    )
    assert written is not None and written["status"]["phase"] == "Deploying"
    assert written["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]


def test_a_refused_token_and_a_gone_apiserver(cluster: dict, tmp_path, monkeypatch) -> None:
    config = json.loads(Path(cluster["kubeconfig"]).read_text())
    config["users"][0]["user"]["token"] = "not-a-token"
    bad = tmp_path / "bad.kubeconfig"
    bad.write_text(json.dumps(config))
    for kube in _client(bad, monkeypatch):
        with pytest.raises(ApiError) as refused:
            kube.list_custom("pipelines", None)
        assert refused.value.status == 401
    config = json.loads(Path(cluster["kubeconfig"]).read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nobody listens
    gone = tmp_path / "gone.kubeconfig"
    gone.write_text(json.dumps(config))
    for kube in _client(gone, monkeypatch):
        with pytest.raises(Unreachable, match=r"GET /apis/edgepipe\.io"):
            kube.list_custom("pipelines", None)


def test_calls_from_the_loop_itself_are_refused(kube: Kube) -> None:
    async def from_the_loop() -> None:
        kube.read_secret("x", "default")

    with pytest.raises(RuntimeError, match="from a thread"):
        asyncio.run_coroutine_threadsafe(from_the_loop(), kube.loop).result()


def test_what_kopf_reads_comes_slimmed_the_handlers_calls_whole(kube: Kube, namespace) -> None:
    """kopf parses LISTs with ``response.json()`` and reads watch streams line by line from
    ``response.content``: both come without what nobody reads (every object's
    managedFields, kubectl's copy of what it applied); the handlers' own calls get the whole
    object, and so does an informer's watch (``OWN_PARSE``: it parses its lines itself)."""
    big = configmap("big", namespace, config="x" * 5000)
    copy = json.dumps(big)
    big["metadata"]["annotations"] = {"edgepipe.io/applied-digest": "d", KUBECTL_COPY: copy}
    kube.apply(big)
    url = f"{kube.server}/api/v1/namespaces/{namespace}/configmaps"
    watch = {"watch": "true", "timeoutSeconds": "1"}  # ADDED for each, then closed

    async def watched(headers: dict[str, str] | None) -> list[dict]:
        assert kube.session is not None
        body = b""
        async with kube.session.get(url, params=watch, headers=headers) as response:
            async for chunk in response.content.iter_chunked(1 << 20):
                body += chunk
        events = [json.loads(line) for line in body.splitlines() if line]
        assert events and events[0]["type"] == "ADDED"
        return [e["object"] for e in events if e["object"]["metadata"]["name"] == "big"]

    async def as_kopf_reads() -> tuple[dict, list[dict], list[dict]]:
        assert kube.session is not None
        async with kube.session.get(url) as response:
            listed = await response.json()
        return listed, await watched(None), await watched(OWN_PARSE)

    run = asyncio.run_coroutine_threadsafe(as_kopf_reads(), kube.loop).result()
    listed, kopfs, informers = run
    assert len(kopfs) == 1 and len(informers) == 1
    for obj in [*(i for i in listed["items"] if i["metadata"]["name"] == "big"), *kopfs]:
        assert "managedFields" not in obj["metadata"]
        assert KUBECTL_COPY not in obj["metadata"]["annotations"]
        assert obj["metadata"]["annotations"]["edgepipe.io/applied-digest"] == "d"
        assert obj["data"]["config"] == "x" * 5000  # the rest is kept
    for obj in [informers[0], kube.call("GET", f"/api/v1/namespaces/{namespace}/configmaps/big")]:
        assert obj["data"]["config"] == "x" * 5000 and obj["metadata"]["managedFields"]
        assert obj["metadata"]["annotations"][KUBECTL_COPY] == copy

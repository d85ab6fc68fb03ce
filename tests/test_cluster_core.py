"""The cluster client's four core/v1 reads (edgepipe.client.core) against the real test
apiserver, side by side with kubernetes' CoreV1Api they replace: the same objects, the
same log text, the same ApiException for what is not there."""

from __future__ import annotations

import base64
import json
import re
import socket
import time

import pytest

from tests.helpers.kubeconfigs import write_kubeconfig
from tests.helpers.pipelines import pipeline

pytestmark = pytest.mark.cluster

ENGINE = {"app.kubernetes.io/instance": "p", "app.kubernetes.io/name": "edgepipe-engine"}
SELECTOR = ",".join(f"{k}={v}" for k, v in ENGINE.items())


def _pod(name: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "engine", "image": "engine:x"}]},
        }
    )


def _failure(call) -> tuple[int, str]:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body)["message"]


def test_core_reads_answer_as_core_v1_api(cluster, namespace, kubectl) -> None:
    import kubernetes

    from edgepipe.client.cluster import Client, ClusterError

    client = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace)
    reference = kubernetes.client.CoreV1Api(client.api.api_client)
    plain = client.api.api_client.sanitize_for_serialization  # a model as its JSON
    kubectl("apply", "-f", "-", stdin=_pod("engine-a", ENGINE))
    kubectl("apply", "-f", "-", stdin=_pod("engine-b", ENGINE))
    kubectl("apply", "-f", "-", stdin=_pod("other", {"app.kubernetes.io/name": "x"}))
    kubectl("create", "secret", "generic", "creds", "--from-literal=username=ann")

    ns = client.core.read_namespace(namespace)
    assert ns["metadata"]["name"] == namespace
    assert ns["metadata"]["uid"] == reference.read_namespace(namespace).metadata.uid

    pods = client.core.list_namespaced_pod(namespace, label_selector=SELECTOR)["items"]
    expected = reference.list_namespaced_pod(namespace, label_selector=SELECTOR).items
    assert sorted(p["metadata"]["name"] for p in pods) == ["engine-a", "engine-b"]
    assert [p["metadata"]["name"] for p in pods] == [p.metadata.name for p in expected]
    assert pods[0]["metadata"]["labels"] == plain(expected[0])["metadata"]["labels"]

    secret = client.core.read_namespaced_secret("creds", namespace)
    assert secret["data"] == reference.read_namespaced_secret("creds", namespace).data
    assert base64.b64decode(secret["data"]["username"]) == b"ann"

    # kwok's pods have no container to read logs from: the apiserver's refusal, the same.
    def log(api):
        return lambda: api.read_namespaced_pod_log("engine-a", namespace, tail_lines=5)

    kubectl("apply", "-f", "-", stdin=json.dumps(pipeline("p", deployed=False)))
    try:
        text = log(client.core)()
    except Exception:
        status, message = _failure(log(client.core))
        assert (status, message) == _failure(log(reference))
        with pytest.raises(ClusterError, match=f"^logs of engine-a: {re.escape(message)}$"):
            client.engine_logs("p", tail=5)
    else:
        assert isinstance(text, str) and text == log(reference)()
        assert client.engine_logs("p", tail=5)["engine-a"] == text

    for what in (
        lambda api: api.read_namespace("nosuchns-core"),
        lambda api: api.read_namespaced_secret("nosuch", namespace),
    ):
        mine = _failure(lambda w=what: w(client.core))
        assert mine[0] == 404
        assert mine == _failure(lambda w=what: w(reference))
    # An empty listing is an answer, not a failure.
    empty = client.core.list_namespaced_pod("nosuchns-core", label_selector=SELECTOR)
    assert empty["kind"] == "PodList" and empty["items"] == []


def test_custom_object_calls_answer_as_custom_objects_api(cluster, namespace) -> None:
    from edgepipe.client.cluster import Client
    from edgepipe.resources import GROUP, VERSION

    client = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace)
    reference = client.api  # kubernetes' CustomObjectsApi on the same login
    assert type(reference).__name__ == "CustomObjectsApi" and client.api is reference
    where = (GROUP, VERSION, namespace, "pipelines")

    applied = client.apply(pipeline("p", deployed=False))  # server-side apply, read back
    assert applied["metadata"]["managedFields"][0]["manager"] == "edgepipe-cli"
    assert applied["metadata"]["managedFields"][0]["operation"] == "Apply"
    mine = client.custom.get_namespaced_custom_object(*where, "p")
    assert mine == reference.get_namespaced_custom_object(*where, "p") == applied
    assert client.custom.list_namespaced_custom_object(*where)["items"] == [mine]
    assert reference.list_namespaced_custom_object(*where)["items"] == [mine]

    merged = client.custom.patch_namespaced_custom_object(
        *where, "p", {"metadata": {"labels": {"a": "1"}}}
    )
    assert merged["metadata"]["labels"] == {"a": "1"}
    assert merged == reference.get_namespaced_custom_object(*where, "p")
    again = reference.patch_namespaced_custom_object(
        *where, "p", {"metadata": {"labels": {"a": "1"}}}
    )
    assert again == merged  # the same patch: nothing changed

    assert _failure(lambda: client.custom.get_namespaced_custom_object(*where, "q")) == (
        _failure(lambda: reference.get_namespaced_custom_object(*where, "q"))
    )


def test_an_apiserver_that_never_answers_is_an_error_within_the_timeout(tmp_path) -> None:
    """A server that takes the connection and never answers (a hung apiserver): the call
    is a ClusterError after the client's request timeout, not a wait without end."""
    from edgepipe.client.cluster import Client, ClusterError

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes the handshakes; nothing reads or answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        client = Client(str(kubeconfig), request_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="cannot reach the cluster"):
            client.list("pipelines")
        assert time.monotonic() - t0 < 10

"""The operator's few Kubernetes calls (server-side apply, delete, read, status patch), made
over kopf's own aiohttp session: one HTTP stack and one bounded pool of connections.

Server-side apply makes every write idempotent: an operator that is killed and restarted
mid-reconcile re-applies the same manifests and ends with exactly one of each object.
Answers are plain JSON dicts. There is no second client (the ``kubernetes`` package, with
urllib3 pools and TLS contexts of its own, cost more memory than the rest of the operator).
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from dataclasses import replace
from typing import Any

import aiohttp
import kopf

from edgepipe.resources import GROUP, VERSION

from .slim import SlimResponse

FIELD_MANAGER = "edgepipe-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
CUSTOM = f"/apis/{GROUP}/{VERSION}"
# Where each kind the operator writes or reads lives: the API prefix and the plural.
PATHS = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "ControllerRevision": ("/apis/apps/v1", "controllerrevisions"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "Service": ("/api/v1", "services"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Pod": ("/api/v1", "pods"),
}
ATTEMPTS = 3  # a connection the apiserver dropped (a restart, an idle keep-alive) is retried


class KubeError(Exception):
    """A Kubernetes API call that failed."""


class ApiError(KubeError):
    """The apiserver answered with an error status (404, 409 Conflict, 422, ...)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status, self.reason = status, reason
        super().__init__(f"({status}) {reason}" + (f": {message}" if message else ""))


class Unreachable(KubeError):
    """No answer: the apiserver is down, a connection broke, or the call timed out."""


def credentials(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In-cluster service-account credentials when running in a pod, else the kubeconfig
    (KUBECONFIG, else ~/.kube/config): its server, CA or insecure-skip-tls-verify, client
    certificate, bearer token or basic auth."""
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        return _service_address(info)
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig")
    return _relative_to_kubeconfig(info)


def _service_address(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """kopf names the apiserver ``https://kubernetes.default.svc``, which needs the
    cluster's DNS; the kubelet gives every pod the Service's address, which the kubernetes
    client used (a cluster without DNS, such as the test node, has only that)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return info
    return replace(info, server=f"https://{f'[{host}]' if ':' in host else host}:{port}")


def _relative_to_kubeconfig(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """A kubeconfig's file paths are relative to the kubeconfig itself."""
    first = (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0]
    base = os.path.dirname(os.path.expanduser(first))
    fields = ("ca_path", "certificate_path", "private_key_path")
    fixed = {
        f: os.path.join(base, value)
        for f in fields
        if isinstance(value := getattr(info, f), str) and not os.path.isabs(value)
    }
    return replace(info, **fixed) if fixed else info


def open_session(info: kopf.ConnectionInfo, limit: int) -> aiohttp.ClientSession:
    """The one session: kopf's watches and patches and the handlers' calls share it. What
    kopf parses of its answers comes slimmed (slim.py): kopf queues every watch event."""
    with warnings.catch_warnings():  # kopf's own deprecation notice on basic auth
        warnings.simplefilter("ignore", DeprecationWarning)
        auth = info.as_aiohttp_basic_auth()
    extra: dict[str, Any] = {"proxy": info.proxy_url} if info.proxy_url else {}
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        trust_env=info.trust_env,
        response_class=SlimResponse,
        **extra,
    )


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = PATHS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


async def _error(response: aiohttp.ClientResponse) -> ApiError:
    """The apiserver's Status message, when the answer has one."""
    try:
        message = (await response.json(content_type=None)).get("message") or ""
    except (ValueError, AttributeError, aiohttp.ClientError):
        message = ""
    return ApiError(response.status, response.reason or "", message)


class Kube:
    """Blocking calls for the handlers' threads, run on the operator's event loop over the
    session kopf logged in with (``use``; a re-login swaps it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 60.0) -> None:
        self.loop, self.timeout = loop, timeout
        self.session: aiohttp.ClientSession | None = None
        self.server = ""
        self.ready = asyncio.Event()

    def use(self, session: aiohttp.ClientSession, server: str) -> None:
        self.session, self.server = session, server.rstrip("/")
        self.ready.set()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> bytes:
        """One call, its answer's bytes; ApiError for an error status, Unreachable when the
        apiserver cannot be reached (after ``ATTEMPTS`` tries for a broken connection)."""
        data = None if body is None else json.dumps(body, default=str)
        headers = {"Content-Type": content_type} if data is not None else None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(ATTEMPTS):
            try:
                await asyncio.wait_for(self.ready.wait(), self.timeout)
                session = self.session
                assert session is not None
                async with session.request(
                    method, self.server + path, data=data, headers=headers, params=params,
                    timeout=timeout,
                ) as response:  # fmt: skip
                    if response.status >= 400:
                        raise await _error(response)
                    return await response.read()
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, RuntimeError) as exc:
                # RuntimeError: the session was closed by a re-login; the retry takes the new.
                if attempt == ATTEMPTS - 1:
                    raise Unreachable(f"{method} {path}: {exc or type(exc).__name__}") from exc
                await asyncio.sleep(0.2 * 2**attempt)
            except TimeoutError as exc:
                raise Unreachable(f"{method} {path}: no answer in {self.timeout:.0f}s") from exc
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` from a handler's thread (never from the loop's own: it would block),
        its JSON answer."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("Kube's calls block: make them from a thread, not the event loop")
        future = asyncio.run_coroutine_threadsafe(self.request(method, path, **kwargs), self.loop)
        # Parsed here, in the handler's thread: the loop also reads every watch stream, and
        # a loop busy parsing answers lags the watches (and kopf then handles stale events).
        return json.loads(future.result())

    def apply(self, manifest: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
        kind, meta = manifest["kind"], manifest["metadata"]
        if kind not in PATHS:
            raise ValueError(f"cannot apply a {kind}")
        return self.call(
            "PATCH",
            _path(kind, meta["namespace"], meta["name"]),
            body=manifest,
            content_type=APPLY,
            params={"fieldManager": manager, "force": "true"},
        )

    def delete(self, kind: str, name: str, namespace: str) -> bool:
        """Delete if present; True when something was deleted."""
        return self._or_none("DELETE", _path(kind, namespace, name)) is not None

    def _or_none(self, method: str, path: str) -> dict[str, Any] | None:
        try:
            return self.call(method, path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def read_deployment(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self._or_none("GET", _path("Deployment", namespace, name))

    def read_hpa(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self._or_none("GET", _path("HorizontalPodAutoscaler", namespace, name))

    def read_secret(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self._or_none("GET", _path("Secret", namespace, name))

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        params = {"labelSelector": _selector(selector)}
        return self.call("GET", _path("Pod", namespace), params=params)["items"]

    def list_revisions(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        params = {"labelSelector": _selector(selector)}
        return self.call("GET", _path("ControllerRevision", namespace), params=params)["items"]

    def list_custom(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of a kind, in one namespace or (None) in all."""
        where = f"/namespaces/{namespace}" if namespace else ""
        return self.call("GET", f"{CUSTOM}{where}/{plural}")["items"]

    def get_custom(self, plural: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self._or_none("GET", f"{CUSTOM}/namespaces/{namespace}/{plural}/{name}")

    def patch_status(
        self,
        plural: str,
        name: str,
        namespace: str,
        status: dict,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the status; with ``resource_version``, only if nobody wrote since
        (the apiserver answers 409 Conflict otherwise). The object as written."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = f"{CUSTOM}/namespaces/{namespace}/{plural}/{name}/status"
        return self.call("PATCH", path, body=body, content_type=MERGE)

"""Publishes through the Kubernetes API: create one, manage its edge locations, and read the
inference logs its edges uploaded (a mixin of ``cluster.Client``, which it uses through the
``ClusterApi`` protocol)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from edgepipe import oci

from .status import WAIT_SECONDS, ClusterError, Progress, status_is_current

if TYPE_CHECKING:
    import pandas as pd


class ClusterApi(Protocol):
    """What the Publish methods use of ``cluster.Client``."""

    namespace: str
    core: Any  # edgepipe.client.core.Core

    def get(self, plural: str, name: str) -> dict[str, Any]: ...

    def list(self, plural: str) -> list[dict[str, Any]]: ...

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]: ...

    def _merge(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def wait(
        self,
        plural: str,
        name: str,
        done: Callable[[dict], bool],
        failed: Callable[[dict], str | None],
        timeout: float,
        progress: Progress | None = None,
    ) -> dict: ...


class PublishMixin:
    """Publishes, for a class that is a ``ClusterApi`` (each method's ``self`` says so)."""

    def publish(
        self: ClusterApi,
        name: str,
        pipeline: str,
        registry: str,
        *,
        secret: str | None = None,
        plain_http: bool | None = None,
        version: str | None = None,
        engine_config: dict | None = None,
        chart_name: str | None = None,
        edges: list[str] | None = None,
        signing_secret: str | None = None,
        timeout: float = WAIT_SECONDS,
        progress: Progress | None = None,
    ) -> dict:
        """Create (or update) a Publish and wait until it is Published."""
        spec: dict[str, Any] = {
            "pipeline": pipeline,
            "registry": {"url": registry},
        }
        if plain_http is not None:  # else: plain HTTP only on loopback (oci.speaks_plain_http)
            spec["registry"]["plainHttp"] = plain_http
        if secret:
            spec["registry"]["secretRef"] = {"name": secret}
        if version:
            spec["version"] = version
        if engine_config:
            spec["engineConfig"] = engine_config
        if chart_name:
            spec["chartName"] = chart_name
        if edges:
            spec["edges"] = list(edges)
        if signing_secret:
            spec["signing"] = {"secretRef": {"name": signing_secret}}
        self.apply({"kind": "Publish", "metadata": {"name": name}, "spec": spec})
        return _wait_published(self, name, timeout, progress)

    def set_edges(
        self: ClusterApi,
        name: str,
        change: str,
        edge: str,
        timeout: float = WAIT_SECONDS,
        progress: Progress | None = None,
    ) -> dict:
        """Add (``change="add"``) or remove an edge location of a Publish, then wait until
        the Publish shows it. The list is replaced only if nobody changed it meanwhile."""
        from edgepipe.resources import check_edges

        for _ in range(5):
            obj = self.get("publishes", name)
            edges = list((obj.get("spec") or {}).get("edges") or [])
            if change == "add":
                if edge in edges:
                    raise ClusterError(f"publish {name!r} already lists edge {edge!r}")
                edges = check_edges([*edges, edge])
            else:
                if edge not in edges:
                    known = ", ".join(edges) or "none"
                    raise ClusterError(f"publish {name!r} has no edge {edge!r} (edges: {known})")
                edges.remove(edge)
            patch = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {"edges": edges},
            }
            try:
                self._merge("publishes", name, patch)
                break
            except ClusterError as exc:
                if "modified" not in str(exc) and "conflict" not in str(exc).lower():
                    raise
        else:
            raise ClusterError(f"publish {name!r} kept changing; try again")
        return _wait_published(self, name, timeout, progress)

    def logs(
        self: ClusterApi,
        pipeline: str,
        *,
        registry: str | None = None,
        edge: str | None = None,
        since: str | datetime | None = None,
        username: str | None = None,
        password: str | None = None,
        plain_http: bool | None = None,
    ) -> pd.DataFrame:
        """The inference logs ``pipeline``'s edges uploaded, as one DataFrame with an
        ``edge`` column. Without ``registry``, the pipeline's Publish names it (and its
        Secret the login, when this user may read it; else ``OCI_USERNAME``/``OCI_PASSWORD``)."""
        from .logs import logs_dataframe

        creds = oci.Credentials(username, password)
        if not creds.username:
            creds = oci.Credentials.from_env()
        if registry is None:
            registry, secret_creds, plain = _publish_registry(self, pipeline)
            creds = secret_creds or creds
            plain_http = plain if plain_http is None else plain_http
        target = oci.Target.parse(registry, creds, plain_http)
        return logs_dataframe(target, pipeline, edge=edge, since=since)


def _wait_published(
    cluster: ClusterApi, name: str, timeout: float, progress: Progress | None
) -> dict:
    return cluster.wait(
        "publishes",
        name,
        done=lambda o: status_is_current(o) and o["status"].get("phase") == "Published",
        failed=lambda o: (
            f"{o['status'].get('reason')}: {o['status'].get('message')}"
            if status_is_current(o) and o["status"].get("phase") == "Failed"
            else None
        ),
        timeout=timeout,
        progress=progress,
    )


def _publish_registry(
    cluster: ClusterApi, pipeline: str
) -> tuple[str, oci.Credentials | None, bool | None]:
    found = [p for p in cluster.list("publishes") if p["spec"].get("pipeline") == pipeline]
    if not found:
        raise ClusterError(
            f"no Publish of pipeline {pipeline!r} in namespace {cluster.namespace}; "
            "give registry=… to read logs from a registry directly"
        )
    reg = found[0]["spec"]["registry"]
    creds = None
    ref = (reg.get("secretRef") or {}).get("name")
    if ref:
        try:
            secret = cluster.core.read_namespaced_secret(ref, cluster.namespace)
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            if "username" in data:
                creds = oci.Credentials(data["username"], data.get("password"))
        except Exception:  # not allowed to read Secrets: the caller's own login
            creds = None
    return reg["url"], creds, reg.get("plainHttp")

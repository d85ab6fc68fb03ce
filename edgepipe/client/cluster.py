"""The cluster side of the Python API: Pipelines and Publishes through the Kubernetes API.

``Client(kubeconfig=…)`` follows kubectl's rules (``KUBECONFIG``, ``~/.kube/config``, the
current context and its namespace; in a pod, the service account). ``deploy``,
``undeploy`` and ``publish`` wait, with a timeout, and return the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# Not edgepipe.config, .manifests or .resources, whose models a call that only reads or
# waits does not need: each command imports what it checks (about 50 ms of CPU at start).
from edgepipe.spec import API_VERSION, GROUP, VERSION, ConfigError

from . import kubeconfig as kubeconfig_file
from .core import Core, Custom
from .publishes import PublishMixin
from .rollouts import RolloutMixin
from .status import WAIT_SECONDS, ClusterError, Progress, find_version, status_is_current

if TYPE_CHECKING:
    from edgepipe.resources import Autoscaling

__all__ = ["Client", "ClusterError", "Progress", "find_version"]

# A wait gives up early when nothing has acted on the object for this long: no operator.
NO_OPERATOR_AFTER = 15.0
# The longest one API request may take to answer (urllib3 tries a read up to 4 times).
REQUEST_SECONDS = 15.0
START_OPERATOR = (
    "start one with 'edgepipe-operator run', or in the cluster with "
    "'helm install edgepipe charts/edgepipe -n edgepipe-system --create-namespace'"
)
SINGULAR = {"pipelines": "pipeline", "publishes": "publish"}


def _check(manifest: dict[str, Any]) -> None:
    """The spec checked here as the CRD and the operator check it, so that a mistake is
    named in the user's words, not in the apiserver's Go formatting."""
    from edgepipe.config import ConfigError
    from edgepipe.manifests import check_manifest

    try:
        check_manifest(manifest)
    except ConfigError as exc:
        name = (manifest.get("metadata") or {}).get("name")
        raise ClusterError(f"{manifest.get('kind')} {name!r}: {exc}") from None


class Client(PublishMixin, RolloutMixin):
    """Pipelines and Publishes in a cluster, as a data scientist uses them.
    ``request_timeout``: seconds one API request may take before it is an error."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        namespace: str | None = None,
        context: str | None = None,
        request_timeout: float = REQUEST_SECONDS,
    ) -> None:
        in_pod = kubeconfig is None and Path("/var/run/secrets/kubernetes.io").exists()
        why = None if in_pod else kubeconfig_file.missing(kubeconfig)
        if why:
            raise ClusterError(why)
        import kubernetes  # after the check: a missing kubeconfig is said at once

        try:
            if in_pod:
                kubernetes.config.load_incluster_config()
                default_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                ns = default_ns.read_text().strip()
            else:
                kubernetes.config.load_kube_config(config_file=kubeconfig, context=context)
                _, active = kubernetes.config.list_kube_config_contexts(kubeconfig)
                ns = (active or {}).get("context", {}).get("namespace", "default")
        except Exception as exc:
            where = f" in {kubeconfig}" if kubeconfig else ""
            raise ClusterError(f"no Kubernetes credentials{where}: {exc}") from None
        kubeconfig_file.warn_if_insecure(kubernetes.client.Configuration.get_default_copy())
        self.namespace = namespace or ns
        self.api_client = kubernetes.client.ApiClient.get_default()
        self.custom = Custom(self.api_client, request_timeout)
        self.core = Core(self.api_client, request_timeout)
        self._exc = kubernetes.client.exceptions.ApiException
        self._custom_objects_api: Any = None

    @property
    def api(self) -> Any:
        """kubernetes' CustomObjectsApi on this client's login, for calls the client does not
        make itself (built on first use: its module costs ~70 ms of CPU to import)."""
        if self._custom_objects_api is None:
            import kubernetes

            self._custom_objects_api = kubernetes.client.CustomObjectsApi(self.api_client)
        return self._custom_objects_api

    # -- raw objects ----------------------------------------------------------------------

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._exc as exc:
            body: dict[str, Any] = {}
            try:
                import json

                body = json.loads(exc.body) or {}
            except Exception:  # the body is not always JSON
                pass
            if exc.status == 404:
                details = body.get("details") or {}
                if details.get("kind") == "namespaces":
                    raise ClusterError(_no_namespace(details.get("name"))) from None
                if not self.namespace_exists():
                    raise ClusterError(_no_namespace(self.namespace)) from None
                raise ClusterError(f"{what}: not found") from None
            raise ClusterError(f"{what}: {body.get('message') or exc.reason}") from None
        except Exception as exc:  # connection refused, DNS, TLS
            raise ClusterError(f"{what}: cannot reach the cluster: {exc}") from None

    def namespace_exists(self) -> bool:
        """False only when the API says the namespace is not there (not when this user may
        not read namespaces)."""
        try:
            self.core.read_namespace(self.namespace)
        except self._exc as exc:
            return exc.status != 404
        except Exception:  # unreachable: the call that failed says so
            return True
        return True

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self._call(
            f"{SINGULAR.get(plural, plural)} {name!r} in namespace {self.namespace}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
        )

    def list(self, plural: str) -> list[dict[str, Any]]:
        out = self._call(
            f"listing {plural}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
        )
        if not out["items"] and not self.namespace_exists():
            raise ClusterError(_no_namespace(self.namespace))
        return out["items"]

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create or update (server-side apply) a Pipeline or Publish."""
        kind = manifest.get("kind")
        plural = {"Pipeline": "pipelines", "Publish": "publishes"}.get(kind)
        if kind == "PipelineConfig":
            raise ClusterError(
                "this is a PipelineConfig: the engine reads it (edgepipe-engine --config) and "
                "'edgepipe publish push' publishes it; the cluster takes Pipeline and Publish "
                "manifests (apiVersion edgepipe.io/v1alpha1; see examples/pipeline.yaml)"
            )
        if plural is None:
            raise ClusterError(f"expected a Pipeline or Publish, got kind {kind!r}")
        _check(manifest)
        manifest = {**manifest, "apiVersion": manifest.get("apiVersion", API_VERSION)}
        meta = manifest.setdefault("metadata", {})
        meta.setdefault("namespace", self.namespace)
        self._call(
            f"applying {kind} {meta.get('name')!r}",
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            meta["namespace"],
            plural,
            meta["name"],
            manifest,
            field_manager="edgepipe-cli",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        # The client does not decode apply responses; read the object back.
        obj = self.get(plural, meta["name"]) if meta["namespace"] == self.namespace else manifest
        return obj

    def apply_file(self, path: str | Path) -> list[dict[str, Any]]:
        from edgepipe.config import ConfigError, read_documents

        try:
            docs = read_documents(path)
        except ConfigError as exc:
            raise ClusterError(str(exc)) from None
        for doc in docs:  # every document checked before any is applied
            if not isinstance(doc, dict):
                raise ClusterError(f"{path}: expected Kubernetes objects, got {type(doc).__name__}")
            if doc.get("kind") in ("Pipeline", "Publish"):
                try:
                    _check(doc)
                except ClusterError as exc:
                    raise ClusterError(f"{path}: {exc}") from None
        out = []
        for doc in docs:
            try:
                out.append(self.apply(doc))
            except ClusterError as exc:
                raise ClusterError(f"{path}: {exc}") from None
        return out

    def _merge(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            f"updating {SINGULAR.get(plural, plural)} {name!r}",
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    # -- waiting --------------------------------------------------------------------------

    def wait(
        self,
        plural: str,
        name: str,
        done: Callable[[dict], bool],
        failed: Callable[[dict], str | None],
        timeout: float,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        start = time.monotonic()
        deadline = start + timeout
        last: dict[str, Any] = {}
        what = f"{SINGULAR.get(plural, plural)} {name!r}"
        while True:
            obj = self.get(plural, name)
            status = obj.get("status") or {}
            if progress and status != last:
                progress(status)
            last = status
            if done(obj):
                return status
            why = failed(obj)
            if why:
                raise ClusterError(f"{what}: {why}")
            waited = time.monotonic() - start
            if not status_is_current(obj) and waited > min(NO_OPERATOR_AFTER, timeout):
                seen = "has no status" if not status else "has a status older than its spec"
                raise ClusterError(
                    f"{what} {seen} after {waited:.0f}s: no edgepipe operator seems to be "
                    f"running in this cluster; {START_OPERATOR}"
                )
            if time.monotonic() > deadline:
                # Why it is still waiting, as the status says it (a reason and a message).
                why = ": ".join(str(status[k]) for k in ("reason", "message") if status.get(k))
                raise ClusterError(
                    f"{what}: still {status.get('phase')} after {timeout:.0f}s"
                    + (f" ({why})" if why else "")
                )
            time.sleep(0.5)

    # -- pipelines ------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        timeout: float = WAIT_SECONDS,
        progress: Progress | None = None,
        *,
        autoscaling: Autoscaling | dict[str, Any] | Literal[False] | None = None,
    ) -> dict:
        """Set ``spec.deployed: true`` and wait until the pipeline is Running.
        ``autoscaling`` (an ``Autoscaling`` or its fields) sets spec.deployment.autoscaling,
        ``False`` removes it (back to ``replicas``), None leaves it."""
        from edgepipe.manifests import autoscaling_patch

        spec: dict[str, Any] = {"deployed": True}
        if autoscaling is not None:
            try:
                spec["deployment"] = {"autoscaling": autoscaling_patch(autoscaling)}
            except ConfigError as exc:
                raise ClusterError(exc.message) from None
        self._merge("pipelines", name, {"spec": spec})
        return self.wait(
            "pipelines",
            name,
            done=lambda o: status_is_current(o) and o["status"].get("phase") == "Running",
            failed=_error_message,
            timeout=timeout,
            progress=progress,
        )

    def undeploy(
        self, name: str, timeout: float = WAIT_SECONDS, progress: Progress | None = None
    ) -> dict:
        self._merge("pipelines", name, {"spec": {"deployed": False}})
        return self.wait(
            "pipelines",
            name,
            done=lambda o: status_is_current(o) and o["status"].get("phase") == "Undeployed",
            failed=lambda o: None,
            timeout=timeout,
            progress=progress,
        )

    def rollback(
        self,
        name: str,
        to: str | None = None,
        *,
        unpin: bool = False,
        timeout: float = WAIT_SECONDS,
        progress: Progress | None = None,
    ) -> dict:
        """Pin ``spec.version`` to a past version (by default the one before the current)
        and wait until the pipeline runs it; ``unpin`` goes back to the spec's steps."""
        status = self.get("pipelines", name).get("status") or {}
        history = [h["version"] for h in status.get("versions") or []]
        current = status.get("version")
        if unpin:
            target = None
        elif to is not None:
            target = find_version(name, history, to)
        else:
            earlier = history[: history.index(current)] if current in history else []
            if not earlier:
                raise ClusterError(f"pipeline {name!r} has no version before {current}")
            target = earlier[-1]
        self._merge("pipelines", name, {"spec": {"version": target}})

        def settled(o: dict) -> bool:
            st = o.get("status") or {}
            if not status_is_current(o) or st.get("phase") not in ("Running", "Undeployed"):
                return False
            return target is None or st.get("version") == target

        return self.wait(
            "pipelines",
            name,
            done=settled,
            failed=_error_message,
            timeout=timeout,
            progress=progress,
        )

    def engine_logs(self, name: str, tail: int = 200) -> dict[str, str]:
        """The last ``tail`` lines of each of a pipeline's engine pods, by pod name."""
        self.get("pipelines", name)  # a name that is not there says so
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/name=edgepipe-engine"
        pods = self._call(
            "listing engine pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
        )["items"]
        if not pods:
            raise ClusterError(f"pipeline {name!r} has no engine pods (is it deployed?)")
        names = [pod["metadata"]["name"] for pod in pods]
        return {
            pod: self._call(
                f"logs of {pod}",
                self.core.read_namespaced_pod_log,
                pod,
                self.namespace,
                tail_lines=tail,
            )
            for pod in names
        }


def _no_namespace(namespace: str | None) -> str:
    return (
        f"namespace {namespace!r} does not exist (-n/--namespace, Client(namespace=...), or "
        "the kubeconfig context's); kubectl get namespaces lists them"
    )


def _error_message(obj: dict) -> str | None:
    """Why a Pipeline whose status is its spec's is in Error, else None."""
    status = obj.get("status") or {}
    if status_is_current(obj) and status.get("phase") == "Error":
        return status.get("message")
    return None

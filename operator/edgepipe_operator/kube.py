"""The operator's few Kubernetes calls: server-side apply, delete, read, status patch.

Server-side apply makes every write idempotent: an operator that is killed and restarted
mid-reconcile re-applies the same manifests and ends with exactly one of each object.
Answers are read as raw JSON: the client's model classes cost more CPU to build (and to
turn back into dicts) than the rest of a reconcile.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    AutoscalingV2Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException

from edgepipe.resources import GROUP, VERSION

FIELD_MANAGER = "edgepipe-operator"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


def load_config() -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


class Kube:
    def __init__(self, api: ApiClient | None = None, pool_size: int | None = None) -> None:
        if api is None:
            config = kubernetes.client.Configuration.get_default_copy()
            if pool_size:
                config.connection_pool_maxsize = pool_size  # one connection per worker thread
            api = ApiClient(config)
        self.api = api
        self.core = CoreV1Api(self.api)
        self.apps = AppsV1Api(self.api)
        self.custom = CustomObjectsApi(self.api)
        self.autoscaling = AutoscalingV2Api(self.api)

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()  # read to the end: the connection can be used again

    def apply(self, manifest: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
        kind = manifest["kind"]
        meta = manifest["metadata"]
        args = dict(
            name=meta["name"],
            namespace=meta["namespace"],
            body=manifest,
            field_manager=manager,
            force=True,
            _content_type=APPLY,
            _preload_content=False,
        )
        calls = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Secret": self.core.patch_namespaced_secret,
            "ControllerRevision": self.apps.patch_namespaced_controller_revision,
            "HorizontalPodAutoscaler": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
        }
        if kind not in calls:
            raise ValueError(f"cannot apply a {kind}")
        return self._json(calls[kind](**args))

    def delete(self, kind: str, name: str, namespace: str) -> bool:
        """Delete if present; True when something was deleted."""
        calls = {
            "Deployment": self.apps.delete_namespaced_deployment,
            "Service": self.core.delete_namespaced_service,
            "ConfigMap": self.core.delete_namespaced_config_map,
            "ControllerRevision": self.apps.delete_namespaced_controller_revision,
            "HorizontalPodAutoscaler": self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
        }
        try:
            calls[kind](name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def read_deployment(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._json(
                self.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read_hpa(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._json(
                self.autoscaling.read_namespaced_horizontal_pod_autoscaler(
                    name, namespace, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=label_selector, _preload_content=False
        )
        return self._json(pods)["items"]

    def list_revisions(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        revs = self.apps.list_namespaced_controller_revision(
            namespace, label_selector=label_selector, _preload_content=False
        )
        return self._json(revs)["items"]

    def read_secret(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._json(
                self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_custom(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of a kind, in one namespace or (None) in all."""
        if namespace:
            out = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        else:
            out = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        return out["items"]

    def get_custom(self, plural: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

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
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, body, _content_type=MERGE
        )

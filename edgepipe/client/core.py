"""The four core/v1 reads of the cluster client, sent through kubernetes' ApiClient without
its CoreV1Api, whose module builds ~280 pydantic models (~0.9 s of CPU) when imported."""

from __future__ import annotations

from typing import Any

# The Accept types kubernetes' CoreV1Api offers for these reads (it picks the JSON one).
OBJECT = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
TEXT = ["text/plain", *OBJECT]


class Core:
    """``read_namespace``, ``list_namespaced_pod``, ``read_namespaced_pod_log`` and
    ``read_namespaced_secret`` as CoreV1Api sends them, answering JSON as plain dicts (a
    log as its text); a failure raises the same ``ApiException``."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def _get(
        self, path: str, params: dict[str, str], query: list, accept: list[str], kind: str
    ) -> Any:
        client = self.api_client
        request = client.param_serialize(
            method="GET",
            resource_path=path,
            path_params=params,
            query_params=query,
            header_params={"Accept": client.select_header_accept(accept)},
            auth_settings=["BearerToken"],
        )
        response = client.call_api(*request)
        response.read()
        return client.response_deserialize(
            response_data=response, response_types_map={"200": kind, "401": None}
        ).data

    def read_namespace(self, name: str) -> dict[str, Any]:
        return self._get("/api/v1/namespaces/{name}", {"name": name}, [], OBJECT, "object")

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> dict[str, Any]:
        return self._get(
            "/api/v1/namespaces/{namespace}/pods",
            {"namespace": namespace},
            [("labelSelector", label_selector)],
            OBJECT,
            "object",
        )

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int) -> str:
        return self._get(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            {"namespace": namespace, "name": name},
            [("tailLines", tail_lines)],
            TEXT,
            "str",
        )

    def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        return self._get(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            {"namespace": namespace, "name": name},
            [],
            OBJECT,
            "object",
        )

"""The cluster client's Kubernetes calls, sent through kubernetes' ApiClient without its
CoreV1Api and CustomObjectsApi, whose modules build ~280 pydantic models (~0.9 s of CPU)
and ~60 validated methods (~70 ms) on import: each call here is the request they send."""

from __future__ import annotations

from typing import Any

# The Accept types kubernetes' API classes offer for these calls (it picks the JSON one).
OBJECT = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
TEXT = ["text/plain", *OBJECT]
JSON = ["application/json"]
CUSTOM = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"


class Calls:
    """One request as kubernetes' generated API methods make it: the JSON answer as plain
    dicts (``str`` a text answer as its text); a failure raises the same ``ApiException``."""

    def __init__(self, api_client: Any, timeout: float | None = None) -> None:
        self.api_client = api_client
        # (connect, read) seconds: an apiserver that accepts and never answers is an error
        # after ``timeout``, not a command (or the console's page) that waits forever.
        self.timeout = (min(5.0, timeout), timeout) if timeout else None

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        query: list | None = None,
        accept: list[str] = OBJECT,
        kind: str = "object",
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        client = self.api_client
        headers = {"Accept": client.select_header_accept(accept)}
        if content_type:
            headers["Content-Type"] = content_type
        request = client.param_serialize(
            method=method,
            resource_path=path,
            path_params=params,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = client.call_api(*request, _request_timeout=self.timeout)
        response.read()
        return client.response_deserialize(
            response_data=response, response_types_map={"200": kind, "401": None}
        ).data


class Core(Calls):
    """The four core/v1 reads of CoreV1Api the client makes, by the same names."""

    def read_namespace(self, name: str) -> dict[str, Any]:
        return self._send("GET", "/api/v1/namespaces/{name}", {"name": name})

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> dict[str, Any]:
        return self._send(
            "GET",
            "/api/v1/namespaces/{namespace}/pods",
            {"namespace": namespace},
            [("labelSelector", label_selector)],
        )

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int) -> str:
        return self._send(
            "GET",
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            {"namespace": namespace, "name": name},
            [("tailLines", tail_lines)],
            TEXT,
            "str",
        )

    def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        return self._send(
            "GET",
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            {"namespace": namespace, "name": name},
        )


class Custom(Calls):
    """The three namespaced custom-object calls of CustomObjectsApi, by the same names."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        return self._send("GET", CUSTOM + "/{name}", _path(locals()), accept=JSON)

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str
    ) -> dict[str, Any]:
        return self._send("GET", CUSTOM, _path(locals()), accept=JSON)

    def patch_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: Any,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str = "application/merge-patch+json",
    ) -> dict[str, Any]:
        query = [("fieldManager", field_manager)] if field_manager is not None else []
        if force is not None:
            query.append(("force", force))
        return self._send(
            "PATCH",
            CUSTOM + "/{name}",
            _path(locals()),
            query,
            JSON,
            body=body,
            content_type=_content_type,
        )


def _path(args: dict[str, Any]) -> dict[str, str]:
    return {k: args[k] for k in ("group", "version", "namespace", "plural", "name") if k in args}

"""A small synchronous client for an engine's HTTP API (pandas-records JSON or Arrow)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

JSON_RECORDS = "application/json; format=pandas-records"
ARROW_FILE = "application/vnd.apache.arrow.file"

_DTYPES = {
    "Half": np.float16,
    "Float": np.float32,
    "Double": np.float64,
    "Int8": np.int8,
    "Int16": np.int16,
    "Int32": np.int32,
    "Int64": np.int64,
    "Uint8": np.uint8,
    "Uint16": np.uint16,
    "Uint32": np.uint32,
    "Uint64": np.uint64,
    "Bool": np.bool_,
}


class EngineClientError(RuntimeError):
    """The engine answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass
class InferenceResult:
    """One row of an answer: its outputs as numpy arrays, plus the raw record."""

    outputs: list[np.ndarray]
    record: dict[str, Any]


def outputs_of(record: dict[str, Any]) -> list[np.ndarray]:
    arrays = []
    for item in record["outputs"]:
        ((type_key, tensor),) = item.items()
        dtype = _DTYPES.get(type_key, np.float32)
        arrays.append(np.asarray(tensor["data"], dtype=dtype).reshape(tensor["dim"]))
    return arrays


class EngineClient:
    """Talks to one engine, e.g. ``EngineClient("http://localhost:8080")``."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                raise EngineClientError(
                    err.get("error", raw.decode()), exc.code, err.get("field")
                ) from None
            except (ValueError, AttributeError):
                raise EngineClientError(f"HTTP {exc.code}: {raw[:200]!r}", exc.code) from None
        except urllib.error.URLError as exc:
            raise EngineClientError(
                f"cannot reach the engine at {self.url}: {exc.reason}"
            ) from None

    def pipelines(self) -> list[dict[str, str]]:
        return orjson.loads(self._request("/pipelines"))["pipelines"]

    def models(self) -> list[dict[str, str]]:
        return orjson.loads(self._request("/models"))["models"]

    def infer_records(self, pipeline: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send pandas-records rows (numpy arrays allowed) and get the answer's records."""
        body = orjson.dumps(records, option=orjson.OPT_SERIALIZE_NUMPY)
        raw = self._request(f"/pipelines/{pipeline}", body, {"Content-Type": JSON_RECORDS})
        return orjson.loads(raw)

    def infer(self, pipeline: str, field: str, tensor: np.ndarray) -> InferenceResult:
        """Run one tensor through a pipeline; the outputs come back as numpy arrays."""
        (record,) = self.infer_records(pipeline, [{field: np.ascontiguousarray(tensor)}])
        return InferenceResult(outputs_of(record), record)

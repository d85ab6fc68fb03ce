"""A small synchronous client for an engine's HTTP API (pandas-records JSON or Arrow).

``EngineClient(url).infer(data)`` takes a numpy array (one row), a pandas DataFrame (one
row per record) or a pyarrow Table, and answers a DataFrame in the tutorial's shape (one
row per input row: ``time``, ``pipeline_name``, ``model_name``, ``model_version``,
``elapsed``, ``check_failures``, ``shadow_data`` and an ``out.<output>`` column per model
output, holding numpy arrays in their own shape), or, for a Table, an Arrow Table.
pandas is optional (``pip install edgepipe[client]``); without it, ``infer_records``
returns the raw records.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
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


def image_media_type(data: bytes) -> str:
    """The media type of an encoded image, from its magic bytes (the engine reads JPEG,
    PNG and WebP)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise EngineClientError("not a JPEG, PNG or WebP image; the engine reads those three")


def encoded_image(path: Path, pixels: np.ndarray) -> bytes:
    """What to post for an image file: its own bytes when the engine reads its format,
    else ``pixels`` (RGB, HWC) re-encoded as a PNG."""
    data = path.read_bytes()
    try:
        image_media_type(data)
        return data
    except EngineClientError:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        return buf.getvalue()


def tls_context(cacert: str | Path | None, client_cert: tuple[str, str] | None) -> Any:
    """An SSLContext trusting ``cacert`` (else the system's CAs) that presents
    ``client_cert`` (certificate file, key file) when given; None when both are None."""
    if cacert is None and client_cert is None:
        return None
    import ssl

    context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    return context


class EngineClient:
    """Talks to one engine, e.g. ``EngineClient("http://localhost:8080")``.

    ``token``: sent as ``Authorization: Bearer <token>`` (an engine with
    ``EDGEPIPE_ENGINE_API_TOKEN`` asks for it). ``cacert``: a PEM file with the CA that
    signed an HTTPS engine's certificate (default: the system's CAs). ``client_cert``:
    (certificate file, key file) for an engine that asks for a client certificate.
    """

    def __init__(
        self,
        url: str,
        pipeline: str | None = None,
        timeout: float = 60.0,
        *,
        token: str | None = None,
        cacert: str | Path | None = None,
        client_cert: tuple[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.pipeline = pipeline
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._tls = tls_context(cacert, client_cert)
        self._described: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:  # never the token
        return f"EngineClient({self.url!r}, pipeline={self.pipeline!r})"

    def _request(self, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = {**self._auth, **(headers or {})}
        req = urllib.request.Request(self.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._tls) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                message, field = err.get("error", raw.decode()), err.get("field")
            except (ValueError, AttributeError):
                message, field = f"HTTP {exc.code}: {raw[:200]!r}", None
            raise EngineClientError(message, exc.code, field) from None
        except urllib.error.URLError as exc:
            hint = ""
            if isinstance(exc.reason, ConnectionRefusedError):
                name = self.pipeline or "<pipeline>"
                hint = (
                    "; is it running? For an engine in a cluster: "
                    f"kubectl port-forward svc/{name}-engine 8080, then use http://localhost:8080"
                )
            raise EngineClientError(
                f"cannot reach the engine at {self.url}: {exc.reason}{hint}"
            ) from None
        except OSError as exc:
            raise EngineClientError(f"cannot reach the engine at {self.url}: {exc}") from None

    def pipelines(self) -> list[dict[str, str]]:
        return orjson.loads(self._request("/pipelines"))["pipelines"]

    def models(self) -> list[dict[str, str]]:
        return orjson.loads(self._request("/models"))["models"]

    def describe(self, pipeline: str | None = None) -> dict[str, Any]:
        """The pipeline's steps, inputs and outputs (asked once per pipeline)."""
        name = self._name(pipeline)
        if name not in self._described:
            self._described[name] = orjson.loads(self._request(f"/pipelines/{name}"))
        return self._described[name]

    def _name(self, pipeline: str | None) -> str:
        name = pipeline or self.pipeline
        if name:
            return name
        served = self.pipelines()
        if len(served) != 1:
            raise EngineClientError(f"this engine serves {len(served)} pipelines; name one")
        self.pipeline = served[0]["id"]
        return self.pipeline

    def infer_records(
        self, pipeline: str | None, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Send pandas-records rows (numpy arrays allowed) and get the answer's records."""
        body = orjson.dumps(records, option=orjson.OPT_SERIALIZE_NUMPY)
        raw = self._request(
            f"/pipelines/{self._name(pipeline)}", body, {"Content-Type": JSON_RECORDS}
        )
        return orjson.loads(raw)

    def infer_tensor(
        self, pipeline: str | None, field: str | None, tensor: np.ndarray
    ) -> InferenceResult:
        """Run one tensor through a pipeline; the outputs come back as numpy arrays."""
        name = self._name(pipeline)
        field = field or self.describe(name)["steps"][0]["inputs"][0]["field"]
        (record,) = self.infer_records(name, [{field: np.ascontiguousarray(tensor)}])
        return InferenceResult(outputs_of(record), record)

    def infer_image(self, pipeline: str | None, image: bytes) -> InferenceResult:
        """Send one encoded image (JPEG, PNG or WebP) as the body, to a pipeline whose first
        step has an image preprocess; with the YOLOv8 postprocess, boxes come back in the
        image's own pixels."""
        name = self._name(pipeline)
        ctype = image_media_type(image)
        raw = self._request(f"/pipelines/{name}", image, {"Content-Type": ctype})
        (record,) = orjson.loads(raw)
        return InferenceResult(outputs_of(record), record)

    def _send_arrow(self, table: Any, pipeline: str | None, accept: str) -> bytes:
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return self._request(
            f"/pipelines/{self._name(pipeline)}",
            sink.getvalue().to_pybytes(),
            {"Content-Type": ARROW_FILE, "Accept": accept},
        )

    def infer_arrow(self, table: Any, pipeline: str | None = None) -> Any:
        """Send an Arrow Table, get an Arrow Table (columns ``out.<output>`` and the rest)."""
        import pyarrow as pa

        raw = self._send_arrow(table, pipeline, ARROW_FILE)
        return pa.ipc.open_file(pa.py_buffer(raw)).read_all()

    def infer_arrow_records(self, table: Any, pipeline: str | None = None) -> list[dict[str, Any]]:
        """Send an Arrow Table, get the answer's records, as ``infer_records`` gives them."""
        return orjson.loads(self._send_arrow(table, pipeline, JSON_RECORDS))

    def infer(self, data: Any, pipeline: str | None = None, *, field: str | None = None) -> Any:
        """numpy array or DataFrame in, DataFrame out; pyarrow Table in, Table out."""
        try:
            import pyarrow as pa

            if isinstance(data, pa.Table):
                return self.infer_arrow(data, pipeline)
        except ImportError:  # pragma: no cover - pyarrow is a core dependency
            pass
        if isinstance(data, np.ndarray):
            name = self._name(pipeline)
            field = field or self.describe(name)["steps"][0]["inputs"][0]["field"]
            records = [{field: np.ascontiguousarray(data)}]
        elif hasattr(data, "to_dict") and hasattr(data, "columns"):
            records = [
                {k: _plain(v) for k, v in row.items()} for row in data.to_dict(orient="records")
            ]
        else:
            raise TypeError(
                f"infer() takes a numpy array, a pandas DataFrame or a pyarrow "
                f"Table, not {type(data).__name__}"
            )
        name = self._name(pipeline)
        outputs = [o["name"] for o in self.describe(name)["steps"][-1]["outputs"]]
        return to_dataframe(self.infer_records(name, records), outputs)


def _plain(value: Any) -> Any:
    return np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value


def to_dataframe(records: list[dict[str, Any]], output_names: list[str]) -> Any:
    """The answer's records as a DataFrame with an ``out.<name>`` column per output."""
    import pandas as pd

    rows = []
    for rec in records:
        row = {
            k: rec[k]
            for k in (
                "time",
                "pipeline_name",
                "model_name",
                "model_version",
                "elapsed",
                "check_failures",
                "shadow_data",
            )
            if k in rec
        }
        row["time"] = pd.to_datetime(rec["time"], unit="ms")
        for name, arr in zip(output_names, outputs_of(rec), strict=True):
            row[f"out.{name}"] = arr
        rows.append(row)
    return pd.DataFrame(rows)

"""Edge inference logs in a registry: where segments go, how they are named, push and list.

An edge engine writes its inference records into Arrow IPC segment files and pushes each
closed one as an OCI artifact to ``<prefix>/logs/<pipeline>/<edge>``. The manifest is
built from the segment's bytes alone and tagged from its content
(``<first ms>-<last ms>-<records>-<digest prefix>``), so pushing the same segment again
(a retry after a lost answer) rewrites the same tag with the same manifest: never a
duplicate. The tag alone tells a reader when a segment's records were made and how many
there are, so listing the tags answers "when did this edge last upload" and ``since``
skips old segments without downloading them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgepipe import oci, timestamps

LOG_ARTIFACT = "application/vnd.edgepipe.inference-log.v1"
SEGMENT_LAYER = "application/vnd.apache.arrow.file"
ANNOTATION = "io.edgepipe.log"
_TAG = re.compile(r"^(\d+)-(\d+)-(\d+)-([0-9a-f]{16})$")


def arrow_schema() -> Any:
    """The records' Arrow schema (pyarrow is imported here: the engine and the client
    have it, the plain library does not).

    Outputs and inputs are tensors as they are (name, dtype, shape and raw bytes), not
    text: logging a raw YOLOv8 output (2.8 MB) as JSON costs more than the inference.
    ``to_arrays`` and ``records_json`` turn them back into arrays or lists.
    """
    import pyarrow as pa

    tensors = pa.list_(
        pa.struct(
            [
                ("name", pa.string()),
                ("dtype", pa.string()),  # numpy's name; "json" for strings (their values)
                ("shape", pa.list_(pa.int64())),
                ("data", pa.large_binary()),
            ]
        )
    )
    return pa.schema(
        [
            ("id", pa.string()),  # <engine boot>-<request>-<row>: unique across restarts
            ("time", pa.timestamp("ns", tz="UTC")),
            ("edge", pa.string()),
            ("pipeline", pa.string()),
            ("pipeline_version", pa.string()),
            ("model_name", pa.string()),  # the model that answered (a split's variant)
            ("model_version", pa.string()),
            ("models", pa.string()),  # JSON: each step's model name and version
            ("outputs", tensors),  # each output (the boxes with a postprocess)
            ("check_failures", pa.list_(pa.string())),
            ("elapsed_ns", pa.int64()),
            ("inputs", tensors),  # only with EDGEPIPE_ENGINE_LOG_INPUTS
        ]
    )


def since_ms(since: str | datetime | None) -> int | None:
    """``since`` (an ISO 8601 time with its zone, a datetime, or Unix seconds) in ms since
    the epoch; None when not given; ValueError naming what was expected."""
    if since is None or since == "":
        return None
    if isinstance(since, datetime):
        parsed = since
    else:
        try:
            return int(float(since) * 1000)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"since {since!r}: expected an ISO 8601 time (2026-11-27T10:00:00Z) or Unix seconds"
            ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"since {since!r}: give a time zone (Z or +01:00)")
    return int(parsed.timestamp() * 1000)


def from_time(table: Any, floor_ms: int | None) -> Any:
    """The records of ``table`` made at ``floor_ms`` or later (all of them for None)."""
    if floor_ms is None:
        return table
    import pyarrow as pa

    times = table.column("time").cast(pa.int64()).to_numpy()
    return table.filter(pa.array(times >= floor_ms * 10**6))


def to_arrays(tensors: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A record's ``outputs`` (or ``inputs``) as numpy arrays by name."""
    import numpy as np

    if tensors is None:
        return None
    out = {}
    for t in tensors:
        if t["dtype"] == "json":
            out[t["name"]] = np.array(json.loads(t["data"]), dtype=object).reshape(t["shape"])
        else:
            out[t["name"]] = np.frombuffer(t["data"], dtype=t["dtype"]).reshape(t["shape"])
    return out


def records_json(table: Any) -> list[dict[str, Any]]:
    """Records as JSON-ready dicts: times in ISO 8601, ``models`` parsed, tensors as
    nested lists by name."""
    rows = table.to_pylist()
    for row in rows:
        row["time"] = row["time"].isoformat().replace("+00:00", "Z")
        row["models"] = json.loads(row["models"])
        for key in ("outputs", "inputs"):
            arrays = to_arrays(row[key])
            row[key] = None if arrays is None else {k: v.tolist() for k, v in arrays.items()}
    return rows


def repository(prefix: str, pipeline: str, edge: str) -> str:
    return "/".join(p for p in (prefix, "logs", pipeline, edge) if p)


def prefix_of(pipeline_url: str) -> str:
    """The publish prefix of a pipeline artifact: ``reg/edge/pipelines/x:v`` -> ``edge``."""
    repo = oci.Reference.parse(pipeline_url).repository
    head, sep, _ = repo.rpartition("/pipelines/")
    return head if sep else ""


@dataclass(frozen=True, order=True)
class Segment:
    """A pushed segment, as its tag names it."""

    first_ms: int
    last_ms: int
    records: int
    digest16: str

    @property
    def tag(self) -> str:
        return f"{self.first_ms}-{self.last_ms}-{self.records}-{self.digest16}"

    @classmethod
    def parse(cls, tag: str) -> Segment | None:
        m = _TAG.match(tag)
        if not m:
            return None
        return cls(int(m[1]), int(m[2]), int(m[3]), m[4])


def push_segment(
    client: oci.Client,
    repo: str,
    data: bytes,
    *,
    first_ms: int,
    last_ms: int,
    records: int,
    pipeline: str,
    edge: str,
) -> Segment:
    """Push one closed segment (idempotent: the same bytes give the same tag and manifest)."""
    layer = client.push_bytes(repo, data, SEGMENT_LAYER)
    segment = Segment(first_ms, last_ms, records, layer["digest"].removeprefix("sha256:")[:16])
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": LOG_ARTIFACT,
        "config": client.push_bytes(repo, b"{}", oci.EMPTY_CONFIG),
        "layers": [layer],
        "annotations": {
            f"{ANNOTATION}.pipeline": pipeline,
            f"{ANNOTATION}.edge": edge,
            f"{ANNOTATION}.records": str(records),
        },
    }
    client.put_manifest(repo, manifest, tag=segment.tag)
    return segment


def segments(client: oci.Client, repo: str, since_ms: int | None = None) -> list[Segment]:
    """The repository's segments, oldest first (those ending before ``since_ms`` left out);
    none when nothing was ever uploaded there."""
    try:
        tags = client.tags(repo)
    except oci.NotInRegistry:
        return []
    found = sorted(s for s in map(Segment.parse, tags) if s is not None)
    return [s for s in found if since_ms is None or s.last_ms >= since_ms]


def fetch_segment(client: oci.Client, repo: str, segment: Segment) -> bytes:
    """A segment's Arrow IPC bytes, checked against their digest."""
    manifest, _ = client.get_manifest(oci.Reference(client.registry, repo, tag=segment.tag))
    (layer,) = [x for x in manifest.get("layers") or [] if x.get("mediaType") == SEGMENT_LAYER]
    return client.get_blob(repo, layer["digest"])


def edges(client: oci.Client, prefix: str, pipeline: str) -> list[str]:
    """The edges that ever uploaded logs of ``pipeline`` (from the registry's catalog)."""
    head = "/".join(p for p in (prefix, "logs", pipeline) if p) + "/"
    return sorted(r[len(head) :] for r in client.repositories() if r.startswith(head))


def last_upload(client: oci.Client, repo: str) -> dict[str, Any] | None:
    """When an edge's newest uploaded record was made, how many records its last segment
    had, and how many segments it uploaded; None when it uploaded nothing yet."""
    found = segments(client, repo)
    if not found:
        return None
    newest = max(found, key=lambda s: s.last_ms)
    return {
        "lastUpload": timestamps.from_ms(newest.last_ms),
        "lastUploadRecords": newest.records,
        "uploadedSegments": len(found),
    }

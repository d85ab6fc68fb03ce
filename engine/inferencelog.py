"""The local inference log: each inference as a record, in size-capped Arrow IPC segments.

The request path only appends a reference to its result (no copies, no encoding); a
single writer thread turns a batch of them into rows and writes a segment: a temp file,
then a rename, so a segment on disk is always whole. Segments wait in ``pending/`` until
the uploader has pushed them, then move to ``uploaded/``. Beyond the disk cap
(``LOCAL_INFERENCE_STORAGE``) the oldest segments go, uploaded ones first, and the
records dropped are counted in the metrics.

File names carry what the uploader and ``GET /logs`` need without opening a file:
``<seq>-<first ms>-<last ms>-<records>.arrow``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from edgepipe import edgelog

from .errors import StartupError
from .metrics import Metrics
from .pipeline import Pipeline, RunResult

log = logging.getLogger("edgepipe.engine")

SCHEMA = edgelog.arrow_schema()
# A batch is written once it holds this many bytes of outputs, whatever its record count.
MAX_BUFFER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class LogSettings:
    directory: Path
    edge: str
    cap_bytes: int
    segment_records: int = 1000
    segment_seconds: float = 10.0
    inputs: bool = False

    @staticmethod
    def default_edge() -> str:
        return os.environ.get("HOSTNAME") or socket.gethostname()


@dataclass(frozen=True)
class SegmentFile:
    path: Path
    seq: int
    first_ms: int
    last_ms: int
    records: int

    @classmethod
    def parse(cls, path: Path) -> SegmentFile | None:
        parts = path.name.removesuffix(".arrow").split("-")
        if not path.name.endswith(".arrow") or len(parts) != 4 or not all(map(str.isdigit, parts)):
            return None
        return cls(path, *map(int, parts))


class InferenceLog:
    """Appends records on the event loop; writes, caps and lists segments on one thread."""

    def __init__(self, settings: LogSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pending_dir = settings.directory / "pending"
        self.uploaded_dir = settings.directory / "uploaded"
        try:
            for d in (self.pending_dir, self.uploaded_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"inference log: cannot create {settings.directory} ({exc.strerror}); set "
                "EDGEPIPE_ENGINE_LOG_DIR to a writable folder, or "
                "EDGEPIPE_ENGINE_LOG_INFERENCES=false"
            ) from None
        self.lock = threading.Lock()  # file moves: the writer's cap against the uploader
        self.buffer: list[tuple[Any, ...]] = []
        self.buffer_bytes = 0
        self.boot = os.urandom(4).hex()  # ids stay unique across restarts
        self.requests = 0
        self.warned_at = -1e9
        files = self.files()
        self.seq = max((f.seq for f in files), default=0) + 1
        # Kept up to date by the writer, so a write under the cap lists no directory.
        self.total_bytes = sum(_size(f.path) for f in files)
        self.metrics.log_bytes.set(self.total_bytes)

    # -- on the event loop: cheap ----------------------------------------------------------

    def add(
        self,
        pipeline: Pipeline,
        version: str,
        result: RunResult,
        rows,
        elapsed_ns: int,
        nbytes: int,
    ):
        """Remember one answered request (``nbytes``: its outputs' size, which the data plane
        has computed); True when the buffer should be written now."""
        self.requests += 1
        inputs = rows if self.settings.inputs else None
        self.buffer.append(
            (time.time_ns(), self.requests, pipeline, version, result, inputs, elapsed_ns)
        )
        self.buffer_bytes += nbytes
        return (
            len(self.buffer) >= self.settings.segment_records
            or self.buffer_bytes >= MAX_BUFFER_BYTES
        )

    def take(self) -> list[tuple[Any, ...]]:
        batch, self.buffer, self.buffer_bytes = self.buffer, [], 0
        return batch

    # -- on the writer thread --------------------------------------------------------------

    def table(self, batch: list[tuple[Any, ...]]) -> pa.Table:
        """One row per inference row of each request in ``batch``."""
        cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        edge = self.settings.edge
        for t, req, pipeline, version, result, inputs, elapsed in batch:
            models = orjson.dumps(
                [
                    {"step": s.name, "name": s.model.name, "version": s.model.version}
                    for s in pipeline.steps
                ]
            ).decode()
            names = [spec.name for spec in result.output_specs]
            for i, outs in enumerate(result.outputs):
                cols["id"].append(f"{self.boot}-{req}-{i}")
                cols["time"].append(t)
                cols["edge"].append(edge)
                cols["pipeline"].append(pipeline.name)
                cols["pipeline_version"].append(version)
                cols["model_name"].append(result.answered_by.name)
                cols["model_version"].append(result.answered_by.version)
                cols["models"].append(models)
                cols["outputs"].append(_tensors(dict(zip(names, outs, strict=True))))
                cols["check_failures"].append(list(result.check_failures[i]))
                cols["elapsed_ns"].append(elapsed)
                cols["inputs"].append(_tensors(inputs[i]) if inputs is not None else None)
        return pa.table(cols, schema=SCHEMA)

    def write(self, batch: list[tuple[Any, ...]]) -> SegmentFile | None:
        """Write a batch as a segment, atomically, then keep the disk under the cap. A
        failed write (a full disk) loses the batch, counted as dropped, and says why."""
        if not batch:
            return None
        try:
            return self._write(batch)
        except OSError as exc:
            rows = sum(len(item[4].outputs) for item in batch)
            self.metrics.log_dropped.labels("false").inc(rows)
            log.error("inference log: cannot write %d records (%s); dropped", rows, exc)
            return None

    def _write(self, batch: list[tuple[Any, ...]]) -> SegmentFile | None:
        table = self.table(batch)
        times = table.column("time").cast(pa.int64()).to_numpy()
        first, last = int(times.min()) // 10**6, int(times.max()) // 10**6
        name = f"{self.seq:012d}-{first}-{last}-{table.num_rows}.arrow"
        self.seq += 1
        fd, tmp = tempfile.mkstemp(dir=self.pending_dir, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as raw, pa.ipc.new_file(raw, SCHEMA) as writer:
                writer.write_table(table)
            os.replace(tmp, self.pending_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.metrics.log_records.inc(table.num_rows)
        self.total_bytes += _size(self.pending_dir / name)
        self.metrics.log_bytes.set(self.total_bytes)
        if self.total_bytes > self.settings.cap_bytes:
            self.enforce_cap()
        return SegmentFile.parse(self.pending_dir / name)

    def files(self) -> list[SegmentFile]:
        """Every segment on disk, oldest first."""
        found = [
            SegmentFile.parse(p)
            for d in (self.uploaded_dir, self.pending_dir)
            for p in d.glob("*.arrow")
        ]
        return sorted((f for f in found if f is not None), key=lambda f: f.seq)

    def pending(self) -> list[SegmentFile]:
        found = (SegmentFile.parse(p) for p in self.pending_dir.glob("*.arrow"))
        return sorted((f for f in found if f is not None), key=lambda f: f.seq)

    def enforce_cap(self) -> None:
        """Drop the oldest segments (uploaded ones first) until the disk use is under the cap."""
        with self.lock:
            files = self.files()
            total = sum(_size(f.path) for f in files)
            order = [f for f in files if f.path.parent == self.uploaded_dir]
            order += [f for f in files if f.path.parent == self.pending_dir]
            for f in order:
                if total <= self.settings.cap_bytes:
                    break
                size = _size(f.path)
                f.path.unlink(missing_ok=True)
                total -= size
                uploaded = f.path.parent == self.uploaded_dir
                self.metrics.log_dropped.labels(str(uploaded).lower()).inc(f.records)
                if not uploaded and time.monotonic() - self.warned_at > 60:  # not per segment
                    self.warned_at = time.monotonic()
                    log.warning(
                        "inference log: dropping the oldest records, never uploaded, to stay "
                        "under LOCAL_INFERENCE_STORAGE=%d bytes (%d now; "
                        "edgepipe_log_dropped_records counts them all)",
                        self.settings.cap_bytes,
                        f.records,
                    )
            self.total_bytes = total
            self.metrics.log_bytes.set(total)

    def mark_uploaded(self, f: SegmentFile) -> None:
        with (
            self.lock,
            contextlib.suppress(FileNotFoundError),
        ):  # the cap may have taken it meanwhile
            os.replace(f.path, self.uploaded_dir / f.path.name)

    def read(self, since_ms: int | None, buffered: list[tuple[Any, ...]]) -> pa.Table:
        """Every record on disk and in the buffer, from ``since_ms`` on, oldest first."""
        tables = []
        for f in self.files():
            if since_ms is not None and f.last_ms < since_ms:
                continue
            with contextlib.suppress(FileNotFoundError):
                tables.append(pa.ipc.open_file(pa.memory_map(str(f.path))).read_all())
        if buffered:
            tables.append(self.table(buffered))
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        return edgelog.from_time(table, since_ms)


def _tensors(arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """Arrays as the log stores them: their bytes, dtype and shape (one copy, no text)."""
    out = []
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind in "OUS":  # strings: their values, as JSON
            data, dtype = orjson.dumps(a.tolist()), "json"
        else:
            data, dtype = np.ascontiguousarray(a).tobytes(), a.dtype.name
        out.append({"name": name, "dtype": dtype, "shape": list(a.shape), "data": data})
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

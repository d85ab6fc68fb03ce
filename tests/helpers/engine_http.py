"""An engine over plain HTTP (the standard library, no client of ours): requests that
return the status whatever it is, Arrow file bodies, and the figures on /metrics."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

import pyarrow as pa

from edgepipe.localengine import EngineProcess

JSON = "application/json; format=pandas-records"
ARROW = "application/vnd.apache.arrow.file"


def post(
    url: str,
    body: bytes,
    content_type: str = JSON,
    accept: str | None = None,
    headers: dict[str, str] | None = None,
):
    headers = {"Content-Type": content_type, **(headers or {})}
    if accept:
        headers["Accept"] = accept
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def get(url: str, headers: dict[str, str] | None = None):
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=30
        ) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def arrow_table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def metric(engine: EngineProcess, name: str) -> float:
    text = urllib.request.urlopen(engine.url + "/metrics", timeout=5).read().decode()
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return sum(map(float, found))


def wait_metric(engine: EngineProcess, name: str, at_least: float, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while (value := metric(engine, name)) < at_least:
        assert time.monotonic() < deadline, (
            f"{name} stayed at {value} (< {at_least}): {engine.log()}"
        )
        time.sleep(0.2)
    return value

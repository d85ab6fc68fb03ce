"""Edge inference logs: written locally in capped Arrow segments, uploaded to the registry
through an outage exactly once, and read back centrally as one table naming each edge."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from edgepipe import edgelog, oci
from edgepipe.client import EngineClient
from edgepipe.client.logs import logs_dataframe, read_logs
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.cli import cli
from tests.helpers.engine_http import metric, wait_metric
from tests.helpers.publishing import creds_env, edge_env

FAST = {
    "EDGEPIPE_ENGINE_LOG_SEGMENT_RECORDS": "25",
    "EDGEPIPE_ENGINE_LOG_SEGMENT_SECONDS": "0.5",
    "EDGEPIPE_ENGINE_LOG_UPLOAD_SECONDS": "0.5",
}


def publish(reg, tmp_path: Path, name: str = "counter") -> dict:
    model = m.add_constant(tmp_path / "add.onnx", 1.0)
    config = tmp_path / "pipeline.json"
    config.write_text(
        json.dumps({"name": name, "steps": [{"model": {"name": "add", "path": str(model)}}]})
    )
    args = ["publish", "push", str(config), "--registry", f"{reg.host}/edge", "-o", "json"]
    return json.loads(cli(*args, env=creds_env(reg) if reg.auth else {}).stdout)


def send(engine: EngineProcess, pipeline: str, values: range) -> None:
    client = EngineClient(engine.url)
    for i in values:
        client.infer_records(pipeline, [{"x": np.full((1, 4), i, dtype=np.float32)}])


def local(engine: EngineProcess, **query: str) -> pa.Table:
    q = "&".join(f"{k}={v}" for k, v in {**query, "format": "arrow"}.items())
    with urllib.request.urlopen(f"{engine.url}/logs?{q}", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/vnd.apache.arrow.stream"
        return pa.ipc.open_stream(resp.read()).read_all()


def first_values(table: pa.Table) -> list[int]:
    """Each record's request number: the input was i, the model adds 1."""
    return [int(edgelog.to_arrays(o)["y"][0][0]) - 1 for o in table.column("outputs").to_pylist()]


def test_an_outage_loses_nothing_and_duplicates_nothing(own_registry, tmp_path) -> None:
    status = publish(own_registry, tmp_path)
    env = {
        **edge_env({"status": status}, own_registry, tmp_path / "cache"),
        **FAST,
        "EDGE_NAME": "store-1",
    }
    target = oci.Target.parse(
        f"{own_registry.host}/edge", oci.Credentials(own_registry.username, own_registry.password)
    )
    with EngineProcess(env=env, log_path=tmp_path / "engine.log") as engine:
        assert "inference logs of edge 'store-1' upload to" in engine.log()
        send(engine, "counter", range(150))
        wait_metric(engine, "edgepipe_log_uploaded_records_total", 150)
        own_registry.stop()
        send(engine, "counter", range(150, 300))
        wait_metric(engine, "edgepipe_log_upload_failures_total", 1)
        wait_metric(engine, "edgepipe_log_records_total", 300)
        pending = list((tmp_path / "cache" / "logs" / "pending").glob("*.arrow"))
        assert pending, "with the registry down, segments wait on disk"
        here = local(engine)
        assert here.num_rows == 300
        own_registry.start()
        wait_metric(engine, "edgepipe_log_uploaded_records_total", 300)
        assert "registry back" in engine.log()
        assert not list((tmp_path / "cache" / "logs" / "pending").glob("*.arrow"))

    central = read_logs(target, "counter")
    assert central.num_rows == 300
    assert sorted(central.column("id").to_pylist()) == sorted(here.column("id").to_pylist())
    assert sorted(first_values(central)) == list(range(300))
    # Segments went up oldest first: the registry's tags in order hold the requests in order.
    repo = edgelog.repository("edge", "counter", "store-1")
    client = target.client()
    segments = edgelog.segments(client, repo)
    order = [
        v
        for s in segments
        for v in first_values(
            pa.ipc.open_file(pa.BufferReader(edgelog.fetch_segment(client, repo, s))).read_all()
        )
    ]
    assert order == list(range(300))
    # A segment pushed again (its first answer lost) is the same tag: still 300, once each.
    again = segments[0]
    data = edgelog.fetch_segment(client, repo, again)
    kw = {"first_ms": again.first_ms, "last_ms": again.last_ms, "records": again.records}
    assert (
        edgelog.push_segment(client, repo, data, **kw, pipeline="counter", edge="store-1") == again
    )
    assert len(edgelog.segments(client, repo)) == len(segments)
    # The DataFrame names the edge; the CLI reads the same table.
    df = logs_dataframe(target, "counter")
    assert set(df["edge"]) == {"store-1"} and len(df) == 300
    (y,) = df.loc[df["id"] == here.column("id")[0].as_py(), "outputs"].iloc[0].values()
    np.testing.assert_array_equal(y, np.full((1, 4), 1.0, np.float32))  # request 0: 0 + 1
    text = cli(
        "logs",
        "counter",
        "--registry",
        f"{own_registry.host}/edge",
        "--edge",
        "store-1",
        env=creds_env(own_registry),
    ).stdout
    assert "store-1" in text and "y[1, 4]" in text
    out = cli(
        "logs",
        "counter",
        "--registry",
        f"{own_registry.host}/edge",
        "-o",
        "json",
        env=creds_env(own_registry),
    )
    assert sorted(r["id"] for r in json.loads(out.stdout)) == sorted(df["id"])


def test_the_cap_drops_the_oldest_and_counts_them(registry, tmp_path) -> None:
    """An open registry and no credentials: the logs stay local, and the engine says so once."""
    status = publish(registry, tmp_path, name="capped")
    cap = 40_000
    env = {
        **edge_env({"status": status}, registry, tmp_path / "cache"),
        **FAST,
        "EDGEPIPE_ENGINE_LOG_SEGMENT_RECORDS": "10",
        "LOCAL_INFERENCE_STORAGE": str(cap),
        "OCI_USERNAME": "",
        "OCI_PASSWORD": "",
    }
    with EngineProcess(env=env, log_path=tmp_path / "engine.log") as engine:
        send(engine, "capped", range(400))
        wait_metric(engine, "edgepipe_log_records_total", 400)
        dropped = metric(engine, "edgepipe_log_dropped_records_total")
        kept = local(engine)
        files = list((tmp_path / "cache" / "logs").rglob("*.arrow"))
        assert sum(f.stat().st_size for f in files) <= cap
        assert metric(engine, "edgepipe_log_bytes") <= cap
        assert dropped > 0 and dropped + kept.num_rows == 400
        # The oldest went: what is kept is the newest requests, in order.
        assert first_values(kept) == list(range(400 - kept.num_rows, 400))
        text = (tmp_path / "engine.log").read_text()
        assert text.count("inference logs stay local") == 1
        assert text.count("dropping the oldest records") == 1
        assert metric(engine, "edgepipe_log_uploaded_records_total") == 0
    assert all("/logs/" not in r for r in oci.Client(registry.host, plain_http=True).repositories())


def test_two_edges_give_one_table(own_registry, tmp_path) -> None:
    status = publish(own_registry, tmp_path, name="fleet")
    target = oci.Target.parse(
        f"{own_registry.host}/edge", oci.Credentials(own_registry.username, own_registry.password)
    )
    engines = []
    for edge, n in (("north", 12), ("south", 7)):
        env = {
            **edge_env({"status": status}, own_registry, tmp_path / edge),
            **FAST,
            "EDGE_NAME": edge,
        }
        engine = EngineProcess(env=env, log_path=tmp_path / f"{edge}.log").start()
        engines.append(engine)
        send(engine, "fleet", range(n))
    try:
        wait_metric(engines[0], "edgepipe_log_uploaded_records_total", 12)
        wait_metric(engines[1], "edgepipe_log_uploaded_records_total", 7)
    finally:
        for engine in engines:
            engine.stop()
    df = logs_dataframe(target, "fleet")
    assert df.groupby("edge").size().to_dict() == {"north": 12, "south": 7}
    assert len(set(df["id"])) == 19
    assert set(logs_dataframe(target, "fleet", edge="south")["edge"]) == {"south"}
    # since: only records made from then on.
    middle = df.sort_values("time")["time"].iloc[10]
    later = logs_dataframe(target, "fleet", since=middle.isoformat())
    assert len(later) == (df["time"] >= middle).sum()
    assert logs_dataframe(target, "fleet", since="2100-01-01T00:00:00Z").empty
    with pytest.raises(ValueError, match="time zone"):
        read_logs(target, "fleet", since="2026-01-01T00:00:00")


def test_logs_endpoint_rejects_bad_input(tmp_path) -> None:
    model = m.add_constant(tmp_path / "add.onnx", 1.0)
    with EngineProcess("--model", str(model), log_path=tmp_path / "off.log") as engine:
        with pytest.raises(urllib.error.HTTPError) as off:
            urllib.request.urlopen(engine.url + "/logs", timeout=5)
        assert (
            off.value.code == 404 and "EDGEPIPE_ENGINE_LOG_INFERENCES" in off.value.read().decode()
        )
    env = {
        "EDGEPIPE_ENGINE_LOG_INFERENCES": "true",
        "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp_path / "c"),
        "EDGEPIPE_ENGINE_LOG_INPUTS": "true",
    }
    with EngineProcess("--model", str(model), env=env, log_path=tmp_path / "on.log") as engine:
        send(engine, "add", range(3))
        for query, field in (
            ("since=yesterday", "since"),
            ("format=xml", "format"),
            ("limit=0", "limit"),
        ):
            with pytest.raises(urllib.error.HTTPError) as bad:
                urllib.request.urlopen(f"{engine.url}/logs?{query}", timeout=5)
            assert bad.value.code == 400 and json.loads(bad.value.read())["field"] == field
        body = json.loads(urllib.request.urlopen(engine.url + "/logs", timeout=5).read())
        assert body["count"] == 3 and body["more"] is False
        page = json.loads(urllib.request.urlopen(engine.url + "/logs?limit=2", timeout=5).read())
        assert page["count"] == 2 and page["more"] is True
        assert [r["id"] for r in page["records"]] == [r["id"] for r in body["records"][:2]]
        assert [r["inputs"]["x"] for r in body["records"]] == [[[float(i)] * 4] for i in range(3)]
        assert body["records"][0]["time"].endswith("Z")
    for bad_env, message in (
        ({"LOCAL_INFERENCE_STORAGE": "lots"}, "expected a size"),
        ({"EDGE_NAME": "Store_1"}, "EDGE_NAME"),
        ({"EDGEPIPE_ENGINE_LOG_SEGMENT_SECONDS": "0"}, "positive number of seconds"),
        (
            {"EDGEPIPE_ENGINE_LOG_DIR": str(model / "logs")},
            "cannot create .*EDGEPIPE_ENGINE_LOG_DIR",
        ),
    ):
        with pytest.raises(RuntimeError, match=message):
            EngineProcess(
                "--model", str(model), env={**env, **bad_env}, log_path=tmp_path / "bad.log"
            ).start()


def test_a_failed_segment_write_is_counted_and_said(tmp_path, caplog) -> None:
    """A full or broken disk loses the batch it could not write, counted as dropped."""
    from types import SimpleNamespace

    from edgepipe.engine.inferencelog import InferenceLog, LogSettings
    from edgepipe.engine.metrics import Metrics

    metrics = Metrics()
    ilog = InferenceLog(LogSettings(tmp_path / "logs", "e", 10**6), metrics)
    model = SimpleNamespace(name="m", version="1")
    result = SimpleNamespace(
        outputs=[[np.ones((1, 4), np.float32)]] * 2,
        output_specs=[SimpleNamespace(name="y")],
        answered_by=model,
        check_failures=[[], []],
    )
    pipeline = SimpleNamespace(name="p", steps=[SimpleNamespace(name="s", model=model)])
    batch = [(time.time_ns(), 1, pipeline, "v", result, None, 10)]
    assert ilog.write(batch) is not None  # two rows written
    (tmp_path / "blocked").write_text("a file where the folder was")
    ilog.pending_dir = tmp_path / "blocked"
    assert ilog.write(batch) is None
    assert metrics.log_dropped.labels("false")._value.get() == 2
    assert metrics.log_records._value.get() == 2
    assert "cannot write 2 records" in caplog.text

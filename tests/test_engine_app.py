"""The engine's aiohttp app in this process (create_app through aiohttp's test client), a fast
check beside the process tests: its routes, the v2 routes, and that every error is JSON."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from aiohttp.test_utils import TestClient, TestServer

from edgepipe.engine.calls import Calls
from edgepipe.engine.server import CALLS, create_app
from edgepipe.engine.settings import Settings
from tests.helpers.engines import chain_config

JSON = "application/json; format=pandas-records"


def serve(settings: Settings, check) -> None:
    """Run ``check(client)`` against the app in this process, then shut it down."""

    async def main() -> None:
        async with TestClient(TestServer(create_app(settings))) as client:
            await check(client)

    asyncio.run(main())


@pytest.fixture(scope="module")
def chain_settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    import yaml

    path = tmp_path_factory.mktemp("inproc") / "chain.yaml"
    path.write_text(yaml.safe_dump(chain_config(models_dir)))
    return Settings(config_path=path, max_body_bytes=4096, grpc_port=0)


def test_routes_answer_and_every_error_is_json(chain_settings: Settings) -> None:
    async def check(client: TestClient) -> None:
        resp = await client.post(
            "/pipelines/chain", data=b'[{"x": [1, 2, 3, 4]}]', headers={"Content-Type": JSON}
        )
        assert resp.status == 200
        (rec,) = orjson.loads(await resp.read())
        assert rec["outputs"][0]["Float"]["data"] == [4.0, 6.0, 8.0, 10.0]
        described = await (await client.get("/pipelines/chain")).json()
        assert [s["name"] for s in described["steps"]] == ["add1", "double"]
        cases = [
            ("POST", "/pipelines/chain", b"[{", JSON, 400, "body"),
            ("POST", "/pipelines/nope", b"[]", JSON, 404, "pipeline"),
            ("POST", "/pipelines/chain", b"x,y", "text/csv", 415, "Content-Type"),
            ("POST", "/pipelines/chain", b"x" * 5000, JSON, 413, "body"),
            ("GET", "/no/such/route", b"", JSON, 404, "path"),
            ("DELETE", "/pipelines/chain", b"", JSON, 405, "method"),
            ("POST", "/v2/models/chain/infer", b'{"inputs": 1}', "application/json", 400, "inputs"),
        ]
        for method, path, body, ctype, code, field in cases:
            resp = await client.request(method, path, data=body, headers={"Content-Type": ctype})
            doc = await resp.json()
            assert (resp.status, doc["field"]) == (code, field), (path, doc)
            assert doc["error"]
        resp = await client.post(
            "/pipelines/chain",
            data=b'[{"x": [1, 2, 3, 4]}]',
            headers={"Content-Type": JSON, "Accept": "text/html"},
        )
        assert resp.status == 406
        metrics = await (await client.get("/metrics")).text()
        # The data plane counts every outcome it saw, by status.
        for status in ("200", "400", "404", "406", "413", "415"):
            assert f'status="{status}"' in metrics, status

    serve(chain_settings, check)


def test_v2_routes_in_process(chain_settings: Settings) -> None:
    async def check(client: TestClient) -> None:
        req = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]}
        resp = await client.post("/v2/models/chain/infer", data=orjson.dumps(req))
        assert resp.status == 200
        out = await resp.json()
        assert out["model_name"] == "chain" and out["outputs"][0]["data"] == [2, 4, 6, 8]
        meta = await (await client.get("/v2/models/add1")).json()
        assert meta["inputs"][0]["name"] == "x"
        assert (await client.get("/v2/models/nope/ready")).status == 404

    serve(chain_settings, check)


@pytest.mark.parametrize(
    ("spinning", "allow", "stop"), [("calls", "1", "1"), ("off", "0", None), ("on", "1", None)]
)
def test_a_large_answer_streams_whole_with_its_length(
    spinning: str, allow: str, stop: str | None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An answer over ``ANSWER_SLICE`` goes out in slices of the encoded buffer: the client
    gets every byte, a Content-Length, no chunked framing; and the sessions' intra-op
    spinning is what the setting says (by default: while a call runs, stopped after it)."""
    from edgepipe.engine.server import ANSWER_SLICE, DATAPLANE
    from tests.helpers import onnx_models

    width = 400_000  # ~3.6 MB of JSON numbers out: several slices
    model = onnx_models.scale(
        tmp_path_factory.mktemp("wide") / "wide.onnx", 2.0, shape=("N", width)
    )
    settings = Settings(model_path=model, grpc_port=0, intra_op_spinning=spinning)
    assert Settings(grpc_port=0).intra_op_spinning == "calls"  # the default
    x = np.arange(width, dtype=np.float32) / 7

    async def check(client: TestClient) -> None:
        session = client.app[DATAPLANE].pipelines["wide"].steps[0].model.session
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
        if stop is None:
            with pytest.raises(Exception, match="force_spinning_stop"):
                options.get_session_config_entry("session.force_spinning_stop")
        else:
            assert options.get_session_config_entry("session.force_spinning_stop") == stop
        body = orjson.dumps([{"y": x}], option=orjson.OPT_SERIALIZE_NUMPY)
        resp = await client.post("/pipelines/wide", data=body, headers={"Content-Type": JSON})
        data = await resp.read()
        assert resp.status == 200, data[:200]
        assert len(data) > 3 * ANSWER_SLICE
        assert resp.headers["Content-Length"] == str(len(data))
        assert "Transfer-Encoding" not in resp.headers
        (rec,) = orjson.loads(data)
        got = np.asarray(rec["outputs"][0]["Float"]["data"], dtype=np.float32)
        np.testing.assert_array_equal(got, x * 2)
        arrow = await client.post(
            "/pipelines/wide",
            data=body,
            headers={"Content-Type": JSON, "Accept": "application/vnd.apache.arrow.file"},
        )
        assert arrow.status == 200
        raw = await arrow.read()
        assert arrow.headers["Content-Length"] == str(len(raw)) and len(raw) > ANSWER_SLICE
        table = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
        out = table.column("out.z").chunk(0).to_numpy_ndarray()
        np.testing.assert_array_equal(out.reshape(-1), x * 2)

    serve(settings, check)


def test_a_free_model_slot_runs_the_model_in_the_decode_thread_and_never_more_at_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A large request whose decode ends with a model-call slot free runs the model in its
    decode thread (no hop to the infer pool); with six requests at once, no more than
    ``INFER_WORKERS`` model calls ever run together, and every answer is its own."""
    from edgepipe.engine.server import DATAPLANE
    from tests.helpers import onnx_models

    width = 20_000  # a ~200 KB body: decoded in the decode pool, not on the loop
    model = onnx_models.scale(
        tmp_path_factory.mktemp("slot") / "slot.onnx", 2.0, shape=("N", width)
    )
    settings = Settings(model_path=model, grpc_port=0, cpus=2, infer_workers=1)

    async def check(client: TestClient) -> None:
        pipeline = client.app[DATAPLANE].pipelines["slot"]
        seen: list[str] = []
        running = [0, 0]  # now, most at once
        lock = threading.Lock()
        run = pipeline.run

        def counted(rows, state):
            with lock:
                running[0] += 1
                running[1] = max(running)
                seen.append(threading.current_thread().name)
            try:
                time.sleep(0.05)  # long enough for the other requests' decodes to end
                return run(rows, state)
            finally:
                with lock:
                    running[0] -= 1

        pipeline.run = counted

        async def ask(k: int) -> None:
            x = np.full(width, k, dtype=np.float32)
            body = orjson.dumps([{"y": x}], option=orjson.OPT_SERIALIZE_NUMPY)
            resp = await client.post("/pipelines/slot", data=body, headers={"Content-Type": JSON})
            assert resp.status == 200
            (rec,) = orjson.loads(await resp.read())
            assert rec["outputs"][0]["Float"]["data"][:2] == [2.0 * k, 2.0 * k]

        await ask(1)
        assert seen[0].startswith("decode"), seen
        await asyncio.gather(*(ask(k) for k in range(2, 8)))
        assert running[1] == 1, running
        # One call at a time: every call has the cores, no second session is made.
        assert pipeline.steps[0].model.concurrent_session is None
        assert len(seen) == 7
        # Some waited for the slot in the infer pool while another held it.
        assert any(name.startswith("infer") for name in seen), seen

    serve(settings, check)


def test_a_call_alone_gets_the_cores_and_calls_side_by_side_one_thread_each(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """By default (``INFER_WORKERS`` = ``CONFIG_CPUS``) a model call that starts while no
    other runs uses the session of ``CONFIG_CPUS`` threads; the first call that starts
    beside another makes a one-thread session, which the calls that start beside others
    then use until the engine rests or the calls start alone again; every answer is its
    own."""
    from edgepipe.engine.server import DATAPLANE
    from tests.helpers import onnx_models

    width = 20_000
    model = onnx_models.scale(
        tmp_path_factory.mktemp("side") / "side.onnx", 2.0, shape=("N", width)
    )
    settings = Settings(model_path=model, grpc_port=0, cpus=2)
    assert settings.workers == 2 and settings.threads_per_call == 1

    async def check(client: TestClient) -> None:
        onnx = client.app[DATAPLANE].pipelines["side"].steps[0].model
        assert onnx.session.get_session_options().intra_op_num_threads == 2
        used = {"alone": 0, "beside": 0}
        alone_run = onnx.session.run

        def slow(*args):  # a call long enough for the others to start beside it
            used["alone"] += 1
            time.sleep(0.05)
            return alone_run(*args)

        onnx.session.run = slow

        async def ask(k: int) -> None:
            x = np.full(width, k, dtype=np.float32)
            body = orjson.dumps([{"y": x}], option=orjson.OPT_SERIALIZE_NUMPY)
            resp = await client.post("/pipelines/side", data=body, headers={"Content-Type": JSON})
            assert resp.status == 200
            (rec,) = orjson.loads(await resp.read())
            assert rec["outputs"][0]["Float"]["data"][:2] == [2.0 * k, 2.0 * k]

        await ask(1)
        assert used["alone"] == 1 and onnx.concurrent_session is None  # alone: no second one
        await asyncio.gather(*(ask(k) for k in range(2, 6)))
        beside = onnx.concurrent_session
        assert beside is not None
        assert beside.get_session_options().intra_op_num_threads == 1
        beside_run = beside.run

        def counted(*args):
            used["beside"] += 1
            return beside_run(*args)

        beside.run = counted
        used["alone"] = 0
        await asyncio.gather(*(ask(k) for k in range(6, 12)))
        assert used["beside"] >= 1, used  # they started while the first slept in its call
        assert used["alone"] + used["beside"] == 6, used
        await ask(12)
        assert used["alone"] >= 1 and used["alone"] + used["beside"] == 7, used
        for _ in range(100):  # idle for 1 s: the session for concurrent calls is dropped
            if onnx.concurrent_session is None:
                break
            await asyncio.sleep(0.05)
        assert onnx.concurrent_session is None
        # Calls that start alone again drop it too, without waiting for the engine to rest.
        await asyncio.gather(*(ask(k) for k in range(13, 17)))
        assert onnx.concurrent_session is not None
        client.app[CALLS].keep_among_s = 0.0  # the app's own: nothing else shares it
        await ask(17)
        assert onnx.concurrent_session is None

    serve(settings, check)


def test_a_shadow_keeps_one_thread_and_never_makes_the_model_share_the_cores(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A shadow runs on one thread whatever ``CONFIG_CPUS`` is, and a shadow running
    does not count as another call: the step's model still starts alone, on all the
    threads, with no session for concurrent calls made."""
    from edgepipe.config import ModelRef
    from edgepipe.engine import runtime
    from tests.helpers import onnx_models

    path = onnx_models.scale(tmp_path_factory.mktemp("shadow") / "s.onnx", 2.0)
    calls = Calls(lone_threads=2, requests=lambda: 1)
    model = runtime.OnnxModel(ModelRef(name="m", path=str(path)), path, 1, calls)
    shadow = runtime.OnnxModel(ModelRef(name="s", path=str(path)), path, 1, calls, shadow=True)
    assert model.session.get_session_options().intra_op_num_threads == 2
    assert shadow.session.get_session_options().intra_op_num_threads == 1
    started = threading.Event()
    run = shadow.session.run

    def slow(*args):
        started.set()
        time.sleep(0.3)
        return run(*args)

    shadow.session.run = slow
    feed = {"y": np.ones((1, 4), np.float32)}
    beside = threading.Thread(target=shadow.predict, args=(feed,))
    beside.start()
    assert started.wait(10)
    np.testing.assert_array_equal(model.predict(feed)[0], feed["y"] * 2)
    beside.join()
    assert model.concurrent_session is None and shadow.concurrent_session is None


def test_no_second_session_where_the_memory_limit_has_no_room_for_it(
    tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a memory limit (a cgroup's, here fake files) that leaves no room for a second
    session, calls that start beside others take turns on the model's one session (one at
    a time), each answer its own, and the engine says so once at INFO with the figures;
    once the limit has room, the next burst makes the second session."""
    from edgepipe.engine import memory
    from edgepipe.engine.server import DATAPLANE
    from tests.helpers import onnx_models

    tmp = tmp_path_factory.mktemp("tight")
    cgroup = tmp / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{256 * memory.MIB}\n")
    (cgroup / "memory.current").write_text(f"{260 * memory.MIB}\n")
    # 60 MiB of it inactive page cache: 200 MiB in use, 56 MiB free, under the margin.
    (cgroup / "memory.stat").write_text(f"anon 1\ninactive_file {60 * memory.MIB}\n")
    assert memory.container_memory(cgroup) == (256 * memory.MIB, 200 * memory.MIB)
    width = 20_000
    model = onnx_models.scale(tmp / "tight.onnx", 2.0, shape=("N", width))
    settings = Settings(model_path=model, grpc_port=0, cpus=2)
    assert settings.workers == 2

    async def check(client: TestClient) -> None:
        onnx = client.app[DATAPLANE].pipelines["tight"].steps[0].model
        lock = threading.Lock()
        running = [0, 0, 0]  # on the session now, at most, calls
        run = onnx.session.run

        def counted(*args):
            with lock:
                running[0] += 1
                running[1] = max(running[:2])
                running[2] += 1
            try:
                time.sleep(0.05)  # long enough for the others to start beside it
                return run(*args)
            finally:
                with lock:
                    running[0] -= 1

        onnx.session.run = counted

        async def ask(k: int) -> None:
            x = np.full(width, k, dtype=np.float32)
            body = orjson.dumps([{"y": x}], option=orjson.OPT_SERIALIZE_NUMPY)
            resp = await client.post("/pipelines/tight", data=body, headers={"Content-Type": JSON})
            assert resp.status == 200
            (rec,) = orjson.loads(await resp.read())
            assert rec["outputs"][0]["Float"]["data"][:2] == [2.0 * k, 2.0 * k]

        await asyncio.gather(*(ask(k) for k in range(1, 7)))
        await asyncio.gather(*(ask(k) for k in range(7, 13)))
        assert onnx.concurrent_session is None
        assert running[1:] == [1, 12], running  # every call on the one session, one at a time
        said = [r.getMessage() for r in caplog.records if "no second session" in r.getMessage()]
        assert len(said) == 1, said
        assert "memory limit of 256 MiB has 200 MiB in use" in said[0], said
        # Room again: the limit is looked at again once AMONG_KEEP_S has passed since it
        # refused, and the next burst makes it. (Waiting, not setting AMONG_KEEP_S to 0:
        # with 0, the burst's last call, starting alone, would drop it at once.)
        (cgroup / "memory.max").write_text("max\n")
        await asyncio.sleep(client.app[CALLS].keep_among_s + 0.05)
        await asyncio.gather(*(ask(k) for k in range(13, 19)))
        assert onnx.concurrent_session is not None
        assert running[2] < 18, running

    saved = memory.CGROUP
    memory.CGROUP = cgroup
    try:
        with caplog.at_level("INFO", logger="edgepipe.engine"):
            serve(settings, check)
    finally:
        memory.CGROUP = saved


def test_the_memory_limit_from_cgroup_v1_and_v2_files(tmp_path: Path) -> None:
    """``memory.container_memory``: v2's memory.max/current, v1's limit/usage under
    memory/, "max" or v1's huge number as no limit, and no files as no cgroup."""
    from edgepipe.engine import memory

    assert memory.container_memory(tmp_path) is None
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (v1 / "memory.usage_in_bytes").write_text("1000\n")
    assert memory.container_memory(tmp_path) is None
    (v1 / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    (v1 / "memory.stat").write_text("cache 300\ntotal_inactive_file 200\n")
    assert memory.container_memory(tmp_path) == (1 << 30, 800)
    assert memory.room_for(900 * memory.MIB, tmp_path)[0]
    assert not memory.room_for(1000 * memory.MIB, tmp_path)[0]  # under the 102 MiB margin
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("5\n")
    assert memory.container_memory(tmp_path) is None  # v2 first: no limit
    (tmp_path / "memory.max").write_text("4096\n")
    assert memory.container_memory(tmp_path) == (4096, 5)

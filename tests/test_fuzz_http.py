"""The engine's routes under Hypothesis, through aiohttp's test client: pandas-records
JSON, Arrow, v2 JSON, v2 binary with a lying ``Inference-Header-Content-Length``, and raw
images, as arbitrary bytes and as near-misses. Every answer is a 200 or a 4xx with the
error JSON, never a 5xx; and replaying the bad ones leaves the process's Python heap
where it was (no leak per request). Each runs twice: on an open engine and on one with a
token (sent with every request), and an engine with a token answers 401 to anything sent
without it, before reading the body."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe.engine.server import create_app
from edgepipe.engine.settings import Settings
from tests.helpers import onnx_models as m
from tests.helpers.engines import chain_config
from tests.helpers.fuzz_inputs import ARROW_SAMPLE, DATATYPES, JSON_VALUES, SAMPLES

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
RECORDS = "application/json; format=pandas-records"
ARROW = "application/vnd.apache.arrow.file"
HEADER_TEXT = st.characters(min_codepoint=32, max_codepoint=126)
# Every request sent, kept for the leak check at the end.
SENT: list[tuple[str, str, bytes, dict[str, str]]] = []
TOKEN = "fuzz-token-6a2c"


class App:
    """The engine's app served in this process (aiohttp's TestServer, on an event loop of
    its own), and a plain client session: TestClient keeps every response it made, which
    would look like a leak."""

    def __init__(self, settings: Settings) -> None:
        self.auth = {"Authorization": f"Bearer {TOKEN}"} if settings.api_token else {}
        self.loop = asyncio.new_event_loop()
        self.server = TestServer(create_app(settings))
        self.loop.run_until_complete(self.server.start_server())
        self.session = self.loop.run_until_complete(self._session())

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def post(
        self, path: str, body: bytes, headers: dict[str, str], auth: bool = True
    ) -> tuple[int, bytes]:
        sent = {**self.auth, **headers} if auth else headers

        async def go() -> tuple[int, bytes]:
            async with self.session.post(
                self.server.make_url(path), data=body, headers=sent
            ) as resp:
                return resp.status, await resp.read()

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.run_until_complete(self.server.close())
        self.loop.close()


@pytest.fixture(scope="module", params=["open", "token"])
def apps(models_dir: Path, tmp_path_factory: pytest.TempPathFactory, request):
    SENT.clear()  # the leak check replays this engine's corpus only
    token = TOKEN if request.param == "token" else None
    folder = tmp_path_factory.mktemp("fuzz-http")
    chain = folder / "chain.yaml"
    chain.write_text(yaml.safe_dump(chain_config(models_dir)))
    model = m.identity(folder / "images.onnx", "float32", shape=(1, 3, 32, 32), name="images")
    image = folder / "image.yaml"
    image.write_text(
        yaml.safe_dump(
            {
                "name": "img",
                "steps": [
                    {"model": {"name": "img", "path": str(model)}, "preprocess": {"kind": "image"}}
                ],
            }
        )
    )
    out = {
        "chain": App(
            Settings(config_path=chain, max_body_bytes=1 << 20, grpc_port=0, api_token=token)
        ),
        "img": App(
            Settings(config_path=image, max_body_bytes=1 << 20, grpc_port=0, api_token=token)
        ),
    }
    yield out
    for app in out.values():
        app.close()


def send(apps: dict, app: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    SENT.append((app, path, body, headers))
    status, answer = apps[app].post(path, body, headers)
    assert status < 500, (status, answer[:500], body[:200], headers)
    if status != 200:
        doc = orjson.loads(answer)
        assert isinstance(doc.get("error"), str) and doc["error"], doc


@FUZZ
@given(st.sampled_from([RECORDS, ARROW, "application/json", "image/png"]), st.binary(max_size=2048))
def test_arbitrary_bytes_on_every_route(apps, ctype: str, body: bytes) -> None:
    if ctype.startswith("image/"):
        send(apps, "img", "/pipelines/img", body, {"Content-Type": ctype})
    elif ctype == "application/json":
        send(apps, "chain", "/v2/models/chain/infer", body, {"Content-Type": ctype})
    else:
        send(apps, "chain", "/pipelines/chain", body, {"Content-Type": ctype})


@FUZZ
@given(st.one_of(JSON_VALUES, st.lists(st.fixed_dictionaries({"x": JSON_VALUES}), max_size=3)))
def test_records_near_misses(apps, doc) -> None:
    send(apps, "chain", "/pipelines/chain", orjson.dumps(doc), {"Content-Type": RECORDS})


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.integers(0, 10**6),
)
def test_truncated_and_flipped_arrow(apps, flips, cut: int) -> None:
    data = bytearray(ARROW_SAMPLE)
    for pos, value in flips:
        data[pos % len(data)] = value
    body = bytes(data[: max(1, cut % (len(data) + 1))])
    send(apps, "chain", "/pipelines/chain", body, {"Content-Type": ARROW})


@FUZZ
@given(
    # Printable: aiohttp's client refuses to send control characters in a header at all.
    st.one_of(st.none(), st.integers(-5, 10**6).map(str), st.text(HEADER_TEXT, max_size=5)),
    st.sampled_from(DATATYPES),
    st.lists(st.integers(-3, 2**40), max_size=4),
    st.one_of(st.none(), st.integers(-5, 10**6)),
    st.binary(max_size=64),
)
def test_v2_with_lying_headers_and_sizes(apps, header, datatype, shape, size, tail) -> None:
    item: dict = {"name": "x", "datatype": datatype, "shape": shape}
    if size is not None:
        item["parameters"] = {"binary_data_size": size}
    else:
        item["data"] = [1.0, 2.0, 3.0, 4.0]
    headers = {"Content-Type": "application/octet-stream" if header else "application/json"}
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    body = orjson.dumps({"inputs": [item]}) + tail
    send(apps, "chain", "/v2/models/chain/infer", body, headers)


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.integers(0, 10**6),
)
def test_flipped_and_truncated_images(apps, fmt: str, flips, cut: int) -> None:
    data = bytearray(SAMPLES[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    body = bytes(data[: max(1, cut % (len(data) + 1))])
    send(apps, "img", "/pipelines/img", body, {"Content-Type": f"image/{fmt.lower()}"})


@FUZZ
@given(
    st.sampled_from(["/pipelines/chain", "/v2/models/chain/infer", "/logs", "/x"]),
    st.binary(max_size=2048),
    st.one_of(st.none(), st.text(HEADER_TEXT, max_size=40)),
)
def test_without_the_token_nothing_gets_past_401_or_403(apps, path, body, authorization) -> None:
    if not apps["chain"].auth:
        pytest.skip("the engine has no token")
    headers = {"Content-Type": RECORDS}
    if authorization is not None:
        headers["Authorization"] = authorization
    status, answer = apps["chain"].post(path, body, headers, auth=False)
    assert status in (401, 403), (status, answer[:300])
    assert orjson.loads(answer)["field"] == "authorization"
    assert TOKEN not in answer.decode()


def test_replaying_every_request_leaks_nothing(apps) -> None:
    """The corpus above, three times over: Python's heap after the third pass is within
    256 KiB of after the first (a leak of even one small object per request would show:
    the corpus is hundreds of requests)."""
    assert len(SENT) >= 300, "run with the fuzz tests above"
    corpus = list(SENT)

    def replay() -> int:
        for app, path, body, headers in corpus:
            apps[app].post(path, body, headers)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        replay()
        first = replay()
        third = (replay(), replay())[-1]
    finally:
        tracemalloc.stop()
    grown = third - first
    print(
        f"\n{len(corpus)} requests x 2 more passes: heap {first / 1e6:.2f} -> {third / 1e6:.2f} MB"
    )
    assert grown < 256 * 1024, f"the heap grew {grown} bytes over {2 * len(corpus)} requests"

"""Engine access control against the engine as a real process: bearer tokens over REST, the
inference log and gRPC (tritonclient with the header), two tokens at once, a token file
replaced while running, and no token anywhere in the engine's output."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.helpers.cli import ep
from tests.helpers.engine_http import JSON, get, post
from tests.helpers.engines import EngineFactory

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

OLD, NEW = "tok-old-5b0e1c2a9d", "tok-new-77f3a1e0c4"
WRONG = "tok-wrong-0d9c8b7a6f"
BODY = b'[{"x": [[1, 2, 3, 4]]}]'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def engine(start_engine: EngineFactory, models_dir: Path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("auth-cache")
    return start_engine(
        "--model",
        str(models_dir / "add1.onnx"),
        env={
            "EDGEPIPE_ENGINE_API_TOKEN": f"{OLD},{NEW}",
            "EDGEPIPE_ENGINE_LOG_INFERENCES": "true",
            "EDGEPIPE_ENGINE_CACHE_DIR": str(cache),
            "DEBUG": "true",  # the access log too: the token must not be in it either
        },
    )


def _error(raw: bytes) -> dict:
    doc = orjson.loads(raw)
    assert doc["field"] == "authorization", doc
    return doc


def test_rest_asks_for_a_token_and_takes_either_of_two(engine) -> None:
    url = engine.url + "/pipelines/add1"
    status, _, raw = post(url, BODY, JSON)
    assert status == 401, raw
    assert "Bearer" in _error(raw)["error"]
    status, _, raw = post(url, BODY, JSON, headers=bearer(WRONG))
    assert status == 403, raw
    assert WRONG not in raw.decode()
    status, _, raw = post(url, BODY, JSON, headers={"Authorization": f"Basic {OLD}"})
    assert status == 401, raw
    for token in (OLD, NEW):  # two valid at once: a fleet rotates without a gap
        status, _, raw = post(url, BODY, JSON, headers=bearer(token))
        assert status == 200, raw
        assert orjson.loads(raw)[0]["outputs"][0]["Float"]["data"] == [2, 3, 4, 5]


@pytest.mark.parametrize(
    "path", ["/pipelines", "/pipelines/add1", "/models", "/logs", "/v2", "/v2/models/add1",
             "/v2/models/add1/ready", "/metrics", "/no/such/route"],
)  # fmt: skip
def test_every_route_but_the_probes_is_protected(engine, path: str) -> None:
    status, raw = get(engine.url + path)
    assert status == 401, (path, raw)
    status, raw = get(engine.url + path, headers=bearer(WRONG))
    assert status == 403, (path, raw)
    status, raw = get(engine.url + path, headers=bearer(NEW))
    assert status == (404 if path == "/no/such/route" else 200), (path, raw)


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/v2/health/ready"])
def test_probes_stay_open(engine, path: str) -> None:
    assert get(engine.url + path)[0] == 200


def test_logs_need_the_token(engine) -> None:
    post(engine.url + "/pipelines/add1", BODY, JSON, headers=bearer(OLD))
    assert get(engine.url + "/logs")[0] == 401
    status, raw = get(engine.url + "/logs", headers=bearer(OLD))
    assert status == 200 and orjson.loads(raw)["count"] >= 1, raw


def _grpc_infer(client, headers: dict[str, str] | None):
    x = np.ones((1, 4), np.float32)
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    return client.infer("add1", [inp], headers=headers)


def test_grpc_with_tritonclient_and_the_header(engine) -> None:
    client = grpcclient.InferenceServerClient(engine.grpc_target)
    assert client.is_server_live() and client.is_server_ready()  # probes: open
    with pytest.raises(InferenceServerException) as missing:
        _grpc_infer(client, None)
    assert "UNAUTHENTICATED" in str(missing.value.status())
    with pytest.raises(InferenceServerException) as wrong:
        _grpc_infer(client, {"authorization": f"Bearer {WRONG}"})
    assert "PERMISSION_DENIED" in str(wrong.value.status())
    assert WRONG not in str(wrong.value)
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("add1")
    answer = _grpc_infer(client, {"authorization": f"Bearer {NEW}"})
    assert answer.as_numpy("y").tolist() == [[2, 2, 2, 2]]
    meta = client.get_model_metadata("add1", headers={"authorization": f"Bearer {OLD}"})
    assert meta.name == "add1"


def test_tritonclient_http_with_the_header(engine) -> None:
    client = httpclient.InferenceServerClient(engine.url.removeprefix("http://"))
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("add1", [inp])
    answer = client.infer("add1", [inp], headers=bearer(OLD))
    assert answer.as_numpy("y").tolist() == [[2, 2, 2, 2]]


def test_the_cli_sends_the_token(engine, tmp_path: Path) -> None:
    data = tmp_path / "in.json"
    data.write_text('[{"x": [[1, 2, 3, 4]]}]')
    url = engine.url + "/pipelines/add1"
    refused = ep("infer", url, "--input", str(data))
    assert refused.returncode != 0 and "needs a token" in refused.stderr, refused.stderr
    by_env = ep("infer", url, "--input", str(data), "-o", "json", env={"EDGEPIPE_TOKEN": NEW})
    assert by_env.returncode == 0, by_env.stderr
    by_flag = ep("infer", url, "--input", str(data), "--token", WRONG)
    assert by_flag.returncode != 0 and "not one this engine accepts" in by_flag.stderr
    assert WRONG not in by_flag.stderr


def test_no_token_in_any_output(engine) -> None:
    """Last in the module: every request above sent tokens, right and wrong."""
    status, raw = get(engine.url + "/metrics", headers=bearer(OLD))
    assert status == 200
    engine.stop()  # the whole log, flushed
    text = engine.log_path.read_text(errors="replace")
    assert "GET /pipelines" in text or "POST /pipelines" in text, text[-2000:]  # access log on
    for token in (OLD, NEW, WRONG, "tok-"):
        assert token not in text
        assert token not in raw.decode()


def test_a_token_file_replaced_while_running_takes_effect(
    start_engine: EngineFactory, models_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "tokens"
    secret.write_text(f"{OLD}\n")
    engine = start_engine(
        "--model",
        str(models_dir / "add1.onnx"),
        env={"EDGEPIPE_ENGINE_API_TOKEN_FILE": str(secret)},
    )
    url = engine.url + "/pipelines/add1"
    assert post(url, BODY, JSON, headers=bearer(OLD))[0] == 200
    assert post(url, BODY, JSON, headers=bearer(NEW))[0] == 403
    # Replace it the way a Secret volume does: a new file renamed over the old one.
    fresh = tmp_path / "tokens.new"
    fresh.write_text(f"{NEW}\n\n")
    fresh.replace(secret)
    deadline = time.monotonic() + 15
    while post(url, BODY, JSON, headers=bearer(NEW))[0] != 200:
        assert time.monotonic() < deadline, engine.log()
        time.sleep(0.2)
    assert post(url, BODY, JSON, headers=bearer(OLD))[0] == 403
    engine.stop()
    text = engine.log_path.read_text()
    assert "token file" in text and OLD not in text and NEW not in text


def test_an_unreadable_token_file_stops_the_engine(
    start_engine: EngineFactory, models_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nothere"
    with pytest.raises(RuntimeError, match="EDGEPIPE_ENGINE_API_TOKEN_FILE"):
        start_engine(
            "--model",
            str(models_dir / "add1.onnx"),
            env={"EDGEPIPE_ENGINE_API_TOKEN_FILE": str(missing)},
        )


def test_metrics_can_be_left_open_for_a_scraper(
    start_engine: EngineFactory, models_dir: Path
) -> None:
    engine = start_engine(
        "--model",
        str(models_dir / "add1.onnx"),
        env={"EDGEPIPE_ENGINE_API_TOKEN": OLD, "EDGEPIPE_ENGINE_METRICS_AUTH": "false"},
    )
    status, raw = get(engine.url + "/metrics")
    assert status == 200 and OLD.encode() not in raw
    assert get(engine.url + "/pipelines")[0] == 401

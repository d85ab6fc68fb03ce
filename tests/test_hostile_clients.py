"""Slow and idle clients against the engine as a real process: a body trickled at one
byte per 100 ms is cut off after the body timeout without holding anyone else up, and
hundreds of idle keep-alive connections do not stop it serving. Both run on an open
engine and on one with a token (EDGEPIPE_ENGINE_API_TOKEN), whose clients send it."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import orjson
import pytest

from tests.helpers.engine_http import JSON, post
from tests.helpers.engines import EngineFactory

BODY = b'[{"x": [[1, 2, 3, 4]]}]'
TOKEN = "hostile-token-91d0"
AUTH = pytest.mark.parametrize("token", [None, TOKEN], ids=["open", "token"])


def access(token: str | None) -> tuple[dict[str, str], dict[str, str], bytes]:
    """The engine's env, a client's headers, and the raw header line, for ``token``."""
    if token is None:
        return {}, {}, b""
    line = f"Authorization: Bearer {token}\r\n".encode()
    return {"EDGEPIPE_ENGINE_API_TOKEN": token}, {"Authorization": f"Bearer {token}"}, line


@AUTH
def test_a_trickling_client_is_cut_off_and_delays_nobody(
    start_engine: EngineFactory, models_dir, token
) -> None:
    env, headers, line = access(token)
    engine = start_engine(
        "--model",
        str(models_dir / "add1.onnx"),
        env={"EDGEPIPE_ENGINE_BODY_TIMEOUT_SECONDS": "2", **env},
    )
    url = engine.url + "/pipelines/add1"

    def p50(n: int = 40) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, _, raw = post(url, BODY, JSON, headers=headers)
            assert status == 200, raw
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    p50(10)  # warm
    alone = p50()
    answer: list[bytes] = []
    cut: list[float] = []
    started = time.monotonic()

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
            sock.sendall(
                b"POST /pipelines/add1 HTTP/1.1\r\nHost: x\r\n" + line + b"Content-Type: "
                b"application/json\r\nContent-Length: 1000\r\n\r\n["
            )
            sock.settimeout(0.1)  # each wait for an answer is also the 100 ms between bytes
            data = b""
            for _ in range(100):
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        break
                    continue
                if not chunk:
                    break
                data += chunk
            answer.append(data)
            cut.append(time.monotonic() - started)

    slow = threading.Thread(target=trickle)
    slow.start()
    time.sleep(0.3)
    busy = p50()
    slow.join(15)
    cut_after = cut[0]
    assert answer and answer[0].startswith(b"HTTP/1.1 408"), answer
    body = orjson.loads(answer[0].split(b"\r\n\r\n", 1)[1])
    assert body["field"] == "body" and "EDGEPIPE_ENGINE_BODY_TIMEOUT_SECONDS" in body["error"]
    assert cut_after < 8, cut_after  # 2 s, not the 10 s the trickle would take
    # Another client's p50 while the trickle runs: within 10%, plus a millisecond of noise.
    assert busy <= alone * 1.1 + 0.001, (alone, busy)


@AUTH
def test_hundreds_of_idle_connections_do_not_stop_serving(
    start_engine: EngineFactory, models_dir, token
) -> None:
    env, headers, line = access(token)
    engine = start_engine("--model", str(models_dir / "add1.onnx"), env=env)
    idle = []
    try:
        for _ in range(500):
            sock = socket.create_connection(("127.0.0.1", engine.port), timeout=10)
            idle.append(sock)
        # Half of them keep a request open without its body: a keep-alive client mid-way.
        for sock in idle[::2]:
            sock.sendall(
                b"POST /pipelines/add1 HTTP/1.1\r\nHost: x\r\n"
                + line
                + b"Content-Length: 10\r\n\r\n"
            )
        for _ in range(20):
            status, _, raw = post(engine.url + "/pipelines/add1", BODY, JSON, headers=headers)
            assert status == 200, raw
    finally:
        for sock in idle:
            sock.close()

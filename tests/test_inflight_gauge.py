"""The engine's in-flight gauge, which an autoscaler's ``inflight`` metric reads through
Prometheus and prometheus-adapter (issue 28): a request counts from its first byte to its
answer, per pipeline, and the gauge is back to 0 once every request is answered."""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
import urllib.request

import orjson
import pytest

from tests.helpers.engine_http import JSON, post
from tests.helpers.engines import EngineFactory, chain_config

GAUGE = "edgepipe_inflight_requests"


@pytest.fixture(scope="module")
def chain(start_engine: EngineFactory, models_dir):
    return start_engine(config=chain_config(models_dir))


def inflight(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{GAUGE}{{pipeline=\"([^\"]*)\"}} (\S+)$", text, re.M)
    }


def test_a_request_counts_in_flight_until_it_is_answered(chain) -> None:
    # There at 0 before any request: an autoscaler needs the series while the engine idles.
    assert inflight(chain.url) == {"chain": 0.0}
    body = orjson.dumps([{"x": [1.0, 2.0, 3.0, 4.0]}])
    status, _, _ = post(chain.url + "/pipelines/chain", body)
    assert status == 200
    assert inflight(chain.url) == {"chain": 0.0}
    # Three requests whose bodies are not all sent yet: each is in flight.
    addr = urllib.parse.urlsplit(chain.url)
    head = (
        f"POST /pipelines/chain HTTP/1.1\r\nHost: {addr.netloc}\r\nContent-Type: {JSON}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(3):
        s = socket.create_connection((addr.hostname, addr.port), timeout=30)
        s.sendall(head + body[:5])
        socks.append(s)
    # (The engine reads the headers before the body: the handler runs at once.)
    for _ in range(50):
        if inflight(chain.url).get("chain") == 3.0:
            break
        time.sleep(0.1)
    assert inflight(chain.url) == {"chain": 3.0}
    for s in socks:
        s.sendall(body[5:])
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()
    assert inflight(chain.url) == {"chain": 0.0}

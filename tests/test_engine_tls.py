"""The engine over TLS as a real process, with a CA made by openssl: HTTPS checked with
``curl --cacert`` and the CLI, gRPC over TLS with tritonclient, a certificate rotated in
place while running, and a client certificate required (mutual TLS)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import ep
from tests.helpers.engines import EngineFactory
from tests.helpers.tls import Pki, make_pki

grpcclient = pytest.importorskip("tritonclient.grpc")

TOKEN = "tls-token-3e1f9a"
pytestmark = pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def served_cn(port: int, ca: Path) -> str:
    """The common name in the certificate the engine presents on a new connection."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])  # gRPC's port asks for HTTP/2
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        subject = dict(item[0] for item in tls.getpeercert()["subject"])
    return subject["commonName"]


@pytest.fixture(scope="module")
def engine(start_engine: EngineFactory, models_dir: Path, pki: Pki, tmp_path_factory):
    live = tmp_path_factory.mktemp("live-cert")  # copies, so that a test can rotate them
    shutil.copy(pki.cert("server"), live / "tls.crt")
    shutil.copy(pki.key("server"), live / "tls.key")
    return start_engine(
        "--model",
        str(models_dir / "add1.onnx"),
        env={
            "EDGEPIPE_ENGINE_TLS_CERT": str(live / "tls.crt"),
            "EDGEPIPE_ENGINE_TLS_KEY": str(live / "tls.key"),
            "EDGEPIPE_ENGINE_API_TOKEN": TOKEN,
        },
    )


def test_https_checked_with_curl_cacert(engine, pki: Pki) -> None:
    assert engine.url.startswith("https://")
    url = engine.url + "/pipelines"
    ok = curl("--cacert", str(pki.ca), "-H", f"Authorization: Bearer {TOKEN}", url)
    assert ok.stdout == "200", ok.stderr
    assert curl("--cacert", str(pki.ca), url).stdout == "401"
    untrusted = curl(url)  # the system's CAs do not know ours
    assert untrusted.returncode != 0, untrusted
    plain = curl(f"http://127.0.0.1:{engine.port}/health/live")
    assert plain.stdout != "200"


def test_the_cli_with_cacert_and_token(engine, pki: Pki, tmp_path: Path) -> None:
    data = tmp_path / "in.json"
    data.write_text('[{"x": [[1, 2, 3, 4]]}]')
    url = engine.url + "/pipelines/add1"
    good = ep("infer", url, "--input", str(data), "--cacert", str(pki.ca), "--token", TOKEN)
    assert good.returncode == 0, good.stderr
    assert "add1 / add1: Float[1, 4]" in good.stdout
    unknown_ca = ep("infer", url, "--input", str(data), "--token", TOKEN)
    assert unknown_ca.returncode != 0 and "certificate" in unknown_ca.stderr.lower()
    assert "Traceback" not in unknown_ca.stderr


def test_grpc_over_tls(engine, pki: Pki) -> None:
    client = grpcclient.InferenceServerClient(
        engine.grpc_target, ssl=True, root_certificates=str(pki.ca)
    )
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    answer = client.infer("add1", [inp], headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.as_numpy("y").tolist() == [[2, 2, 2, 2]]


def test_a_rotated_certificate_is_served_without_a_restart(engine, pki: Pki) -> None:
    assert served_cn(engine.port, pki.ca) == "edgepipe engine"
    assert served_cn(engine.grpc_port, pki.ca) == "edgepipe engine"
    pki.issue("rotated", "edgepipe engine rotated", server=True)
    live = Path(engine.env["EDGEPIPE_ENGINE_TLS_CERT"]).parent
    # Key first, then the chain: for a moment they do not match, as with any two writes.
    shutil.copy(pki.key("rotated"), live / "tls.key")
    time.sleep(1.5)
    shutil.copy(pki.cert("rotated"), live / "tls.crt")
    deadline = time.monotonic() + 15
    while served_cn(engine.port, pki.ca) != "edgepipe engine rotated":
        assert time.monotonic() < deadline, engine.log()
        time.sleep(0.3)
    # gRPC: a new connection gets the new certificate too.
    while served_cn(engine.grpc_port, pki.ca) != "edgepipe engine rotated":
        assert time.monotonic() < deadline, engine.log()
        time.sleep(0.3)
    client = grpcclient.InferenceServerClient(
        engine.grpc_target, ssl=True, root_certificates=str(pki.ca)
    )
    assert client.is_server_live()


def test_a_client_certificate_is_required(
    start_engine: EngineFactory, models_dir: Path, pki: Pki
) -> None:
    engine = start_engine(
        "--model",
        str(models_dir / "add1.onnx"),
        env={
            "EDGEPIPE_ENGINE_TLS_CERT": str(pki.cert("server")),
            "EDGEPIPE_ENGINE_TLS_KEY": str(pki.key("server")),
            "EDGEPIPE_ENGINE_TLS_CLIENT_CA": str(pki.ca),
        },
        wait_ready=False,
    )
    url = engine.url + "/health/ready"
    mine = ("--cert", str(pki.cert("client")), "--key", str(pki.key("client")))
    deadline = time.monotonic() + 60
    while (answer := curl("--cacert", str(pki.ca), *mine, url)).stdout != "200":
        assert time.monotonic() < deadline, (answer, engine.log())
        time.sleep(0.3)
    refused = curl("--cacert", str(pki.ca), url)
    assert refused.stdout != "200", refused
    grpc_refused = grpcclient.InferenceServerClient(
        engine.grpc_target, ssl=True, root_certificates=str(pki.ca)
    )
    with pytest.raises(Exception):  # noqa: B017 - the handshake fails, whatever its wording
        grpc_refused.is_server_live()
    grpc_ok = grpcclient.InferenceServerClient(
        engine.grpc_target,
        ssl=True,
        root_certificates=str(pki.ca),
        private_key=str(pki.key("client")),
        certificate_chain=str(pki.cert("client")),
    )
    assert grpc_ok.is_server_live()

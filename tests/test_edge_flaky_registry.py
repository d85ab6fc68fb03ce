"""Edge pulls through a registry connection that breaks mid-blob: a TCP proxy between the
engine and the real registry cuts each of its first connections after K bytes. The engine
resumes the model where it stopped, serves only the whole model, and answers like
onnxruntime does."""

from __future__ import annotations

import contextlib
import socket
import threading

import numpy as np
import onnxruntime as ort

from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.publishing import edge_env, publish


class CuttingProxy:
    """127.0.0.1:port -> target; a connection down which the server has sent ``limit``
    bytes is closed (both ways), ``cuts`` times; then everything passes."""

    def __init__(self, target: tuple[str, int], limit: int, cuts: int) -> None:
        self.target, self.limit, self.cuts_left = target, limit, cuts
        self.cut = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.limit), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    with self.lock:
                        doomed = self.cuts_left > 0
                        self.cuts_left -= doomed
                        self.cut += doomed
                    if doomed:
                        dst.sendall(data[: limit - sent])
                        break
                    limit = None
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed = True
        self.server.close()


def test_a_model_cut_mid_blob_is_resumed_and_served_whole(auth_registry, tmp_path) -> None:
    model = m.mlp(tmp_path / "wide.onnx", width=1024, layers=1, seed=3)  # 4 MiB of weights
    size = model.stat().st_size
    configs = tmp_path / "configs"
    configs.mkdir()
    config = {"name": "wide", "steps": [{"model": {"name": "wide", "path": str(model)}}]}
    published = publish(config, configs, auth_registry)
    host, port = auth_registry.host.rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)), limit=size // 3, cuts=3)
    try:
        env = edge_env({"status": published}, auth_registry, tmp_path / "cache")
        via = f"127.0.0.1:{proxy.port}"
        env["PIPELINE_URL"] = env["PIPELINE_URL"].replace(auth_registry.host, via)
        env["OCI_REGISTRY"] = via
        x = np.random.default_rng(1).normal(size=(2, 1024)).astype(np.float32)
        log = tmp_path / "engine.log"
        with EngineProcess(env=env, log_path=log) as engine:
            (rec,) = EngineClient(engine.url).infer_records("wide", [{"x": x}])
            got = outputs_of(rec)[0]
        expected = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert proxy.cut == 3, f"the proxy cut {proxy.cut} connections, not 3"
        text = log.read_text()
        assert text.count("resuming") == 3, text[-3000:]
        # Nothing half-downloaded is left beside the model.
        blobs = list((tmp_path / "cache" / "blobs" / "sha256").iterdir())
        assert [b.name for b in blobs if b.name.startswith(".")] == []
    finally:
        proxy.close()

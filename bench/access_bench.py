"""Access-control benchmark: the cost of a bearer token and of TLS on the hot path.

Run with ``make bench`` (or ``.venv/bin/python bench/access_bench.py``). Three engines
serve the same YOLOv8 model (as ``bench/engine_bench.py`` picks it) with the same threads:
no auth, a token (``EDGEPIPE_ENGINE_API_TOKEN``, three valid so the check compares all),
and a token over TLS (a self-signed certificate made with openssl). One keep-alive client
each posts the 1x3x640x640 Arrow request and reads the Arrow answer. The variants run in
interleaved blocks and each is reported by its least-disturbed block (the lowest median),
as a ratio to no auth in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from edgepipe.localengine import EngineProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_rounds import ARROW, timed

ROOT = Path(__file__).resolve().parent.parent
TOKENS = ["bench-token-old-1f2e3d", "bench-token-mid-4c5b6a", "bench-token-new-7a8b9c"]


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def poster(port: int, path: str, body: bytes, token: str | None, tls: ssl.SSLContext | None):
    """One keep-alive connection posting ``body``; a call returns when the answer is read."""
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=120, context=tls)
    headers = {"Content-Type": ARROW, "Accept": ARROW}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def call() -> None:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        pa.ipc.open_file(pa.py_buffer(data)).read_all()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model with a 1x3x640x640 input")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--per-block", type=int, default=8)
    args = parser.parse_args()
    if args.model is None:
        shared = ROOT.parent / "shared/models/yolov8n.onnx"
        if shared.exists():
            args.model = shared
        else:
            from edgepipe.demo import trained_model_path

            args.model = trained_model_path()
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    sink = pa.BufferOutputStream()
    table = pa.table({"images": pa.FixedShapeTensorArray.from_numpy_ndarray(x)})
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    body = sink.getvalue().to_pybytes()
    path = f"/pipelines/{args.model.stem}"
    base_env = {"CONFIG_CPUS": str(args.cpus)}
    token_env = {**base_env, "EDGEPIPE_ENGINE_API_TOKEN": ",".join(TOKENS)}
    logdir = ROOT / "out"
    logdir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = self_signed(Path(tmp))
        tls_env = {
            **token_env,
            "EDGEPIPE_ENGINE_TLS_CERT": str(cert),
            "EDGEPIPE_ENGINE_TLS_KEY": str(key),
        }
        client_tls = ssl.create_default_context(cafile=str(cert))
        engines = {
            label: EngineProcess("--model", str(args.model), env=env, log_path=logdir / log)
            for label, env, log in (
                ("no auth", base_env, "bench-access-open.log"),
                ("token", token_env, "bench-access-token.log"),
                ("token + TLS", tls_env, "bench-access-tls.log"),
            )
        }
        try:
            for engine in engines.values():
                engine.start()
            variants = {
                "no auth": poster(engines["no auth"].port, path, body, None, None),
                "token": poster(engines["token"].port, path, body, TOKENS[-1], None),
                "token + TLS": poster(
                    engines["token + TLS"].port, path, body, TOKENS[-1], client_tls
                ),
            }
            for fn in variants.values():  # warm-up
                timed(fn, 3)
            blocks: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(args.blocks):
                for label, fn in variants.items():
                    blocks[label].append(statistics.median(timed(fn, args.per_block)))
        finally:
            for engine in engines.values():
                engine.stop()
    best = {k: min(v) for k, v in blocks.items()}
    base = best["no auth"]
    print(
        f"model: {args.model.name}, CONFIG_CPUS={args.cpus}; Arrow 1x3x640x640 in and out; "
        f"{args.blocks} blocks x {args.per_block} requests, least-disturbed block median\n"
    )
    print("| engine | p50 ms | x no auth |")
    print("|---|---:|---:|")
    for label, v in best.items():
        print(f"| {label} | {v * 1000:.1f} | {v / base:.3f} |")


if __name__ == "__main__":
    main()

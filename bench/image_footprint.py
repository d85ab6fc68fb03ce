"""The images' footprint: sizes, their top contributors, and the edge engine's cold start.

Run with ``make footprint`` (or ``.venv/bin/python bench/image_footprint.py [--arm64]``).
In one run, on this machine:

* each image's size as podman reports it (uncompressed), and its top 10 contributors: the
  Debian base as one entry, then the virtualenv's packages (``du`` inside the image);
* the edge engine's cold start, from ``podman run`` to the first answered inference on the
  demo's trained YOLOv8s (43 MB): fresh (an empty cache volume: log in, pull the pipeline
  and the model, load, warm up) and from the cache (the same volume, the registry
  stopped), each the median of ``--runs`` runs. The reference is the same engine started
  as a process on the host the same two ways, so the difference is what the container adds.
  The images themselves are local: no image pull is in these times.

``--arm64`` adds the arm64 engine image (built under qemu emulation by scripts/testimage,
cached) to every table; its cold start is under emulation, so it is reported, not judged.
Emulated fp16 arithmetic takes minutes: ``make footprint`` runs the arm64 cold start with
``--test-model`` (the YOLOv8n-shaped fp32 test model) for both architectures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgepipe.localengine import free_port  # noqa: E402
from tests.helpers.arm64_emulation import arm64_cpuinfo_mount  # noqa: E402
from tests.helpers.oci_registry import Registry  # noqa: E402

PODMAN = str(ROOT / "scripts" / "podman")
SITE = "/opt/edgepipe/lib/python3.11/site-packages"


def podman(*args: str, check: bool = True, timeout: float = 600) -> str:
    proc = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr[-2000:]}")
    return proc.stdout


def build(*args: str) -> list[str]:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "testimage"), *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/testimage {' '.join(args)}:\n{proc.stderr[-3000:]}")
    for line in proc.stderr.splitlines():
        if "built in" in line or "image size" in line:
            print(line, file=sys.stderr)
    return proc.stdout.split()


def contributors(image: str, base: str) -> list[tuple[str, float]]:
    """(what, MB): the base image, then each top-level entry of the virtualenv."""
    out = podman(
        "run", "--rm", "--entrypoint", "sh", image, "-c", f"du -sk {SITE}/* /opt/edgepipe/bin"
    )
    rows = [
        (Path(p).name, int(kb) / 1024) for kb, p in (line.split("\t") for line in out.splitlines())
    ]
    rows.append(("(Debian base: python3, minbase)", size_mb(base)))
    return sorted(rows, key=lambda r: -r[1])


def size_mb(image: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).strip()) / 1e6


def base_of(image: str) -> str:
    """The edgepipe-base image of the same architecture (scripts/testimage's)."""
    arch = json.loads(podman("image", "inspect", image))[0]["Architecture"]
    names = podman("images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/edgepipe-base")
    for name in names.split():
        if json.loads(podman("image", "inspect", name))[0]["Architecture"] == arch:
            return name
    raise RuntimeError(f"no edgepipe-base image for {arch}")


def registry_up(reg: Registry, up: bool) -> None:
    running = reg.proc is not None and reg.proc.poll() is None
    if up and not running:
        reg.start()
    elif running and not up:
        reg.stop()


def first_answer(port: int, path: str, body: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no answer on port {port} within {timeout}s")


def pipeline_path(status: dict) -> str:
    return "/pipelines/" + status["pipelineUrl"].rsplit("/", 1)[1].split(":")[0]


def cold_starts(image: str, status: dict, body: bytes, runs: int, reg: Registry, tmp: Path) -> dict:
    """Seconds from ``podman run`` to the first answer: fresh, then from the cache."""
    words = shlex.split(status["dockerRunCommand"].replace("\\\n", " "))
    path = pipeline_path(status)
    arch = json.loads(podman("image", "inspect", image))[0]["Architecture"]
    emulated = (
        arm64_cpuinfo_mount(tmp) if arch == "arm64" else []
    )  # see tests/helpers/arm64_emulation.py
    fresh, cached = [], []
    for i in range(runs):
        name, volume, port = (
            f"coldstart-{os.getpid()}-{i}",
            f"coldstart-{os.getpid()}-{i}",
            free_port(),
        )
        cmd = [PODMAN, "run", "-d", "--name", name, "--network=host",
               "-e", f"EDGEPIPE_ENGINE_PORT={port}", "-e", "EDGEPIPE_ENGINE_GRPC_PORT=0",
               "-v", f"{volume}:/var/cache/edgepipe", *emulated, *words[2:-1], image]  # fmt: skip
        cmd = [os.path.expandvars(w) for w in cmd]
        try:
            registry_up(reg, True)
            t0 = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True)
            first_answer(port, path, body, timeout=900)
            fresh.append(time.monotonic() - t0)
            podman("stop", "-t", "5", name)
            registry_up(reg, False)  # offline: the cache alone
            t0 = time.monotonic()
            podman("start", name)
            first_answer(port, path, body, timeout=900)
            cached.append(time.monotonic() - t0)
        finally:
            podman("rm", "-f", name, check=False)
            podman("volume", "rm", "-f", volume, check=False)
    return {"fresh": statistics.median(fresh), "cached": statistics.median(cached)}


def host_cold_starts(status: dict, body: bytes, runs: int, reg: Registry, tmp: Path) -> dict:
    """The same two starts with the engine as a process on the host (no container)."""
    fresh, cached = [], []
    exe = str(Path(sys.executable).parent / "edgepipe-engine")
    for i in range(runs):
        port = free_port()
        env = {**os.environ, "PIPELINE_URL": status["pipelineUrl"], "OCI_REGISTRY": reg.host,
               "OCI_PLAIN_HTTP": "true", "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp / f"host-{i}")}  # fmt: skip
        times = []
        for offline in (False, True):
            registry_up(reg, not offline)
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [exe, "--port", str(port), "--grpc-port", "0"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                first_answer(port, pipeline_path(status), body, timeout=300)
                times.append(time.monotonic() - t0)
            finally:
                proc.terminate()
                proc.wait(30)
        fresh.append(times[0])
        cached.append(times[1])
    return {"fresh": statistics.median(fresh), "cached": statistics.median(cached)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm64", action="store_true", help="add the arm64 engine image")
    parser.add_argument("--runs", type=int, default=3, help="cold starts per amd64 engine")
    parser.add_argument(
        "--arm64-runs", type=int, default=1, help="cold starts of the emulated arm64 engine"
    )
    parser.add_argument("--skip-amd64", action="store_true", help="cold starts of arm64 only")
    parser.add_argument(
        "--model",
        type=Path,
        help="the model to start with (default: the demo's trained YOLOv8s; its fp16 "
        "arithmetic takes minutes under emulation)",
    )
    parser.add_argument(
        "--test-model",
        action="store_true",
        help="start with the YOLOv8n-shaped fp32 test model (12 MB) instead",
    )
    args = parser.parse_args()
    engine, operator = build()
    images = {"engine (amd64)": engine, "operator (amd64)": operator}
    if args.arm64:
        images["engine (arm64)"] = build("engine", "--platform", "linux/arm64")[0]
    for label, image in images.items():
        print(f"\n{label}: {image}, {size_mb(image):.0f} MB\n\n| contributor | MB |\n|---|---:|")
        for what, mb in contributors(image, base_of(image))[:10]:
            print(f"| {what} | {mb:.0f} |")

    import numpy as np

    from edgepipe.demo import trained_model_path

    x = np.zeros((1, 3, 640, 640), dtype=np.float32)
    body = json.dumps([{"images": x.tolist()}]).encode()
    with tempfile.TemporaryDirectory() as tmp:
        if args.test_model:
            from tests.helpers import onnx_models

            args.model = onnx_models.yolov8n_shaped(Path(tmp) / "yolov8n.onnx")
        reg = Registry(Path(tmp) / "registry", auth=True).start()
        env = {**os.environ, "OCI_USERNAME": reg.username, "OCI_PASSWORD": reg.password}
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "edgepipe.cli", "publish", "push", "--model",
                 str(args.model or trained_model_path()), "--registry", f"{reg.host}/edge", "-o", "json"],
                check=True, capture_output=True, text=True, env=env,
            ).stdout
        )  # fmt: skip
        os.environ.update(OCI_USERNAME=reg.username, OCI_PASSWORD=reg.password)
        print("\n| engine | fresh from the registry (s) | from the cache, offline (s) |")
        print("|---|---:|---:|")
        if not args.skip_amd64:
            t = host_cold_starts(status, body, args.runs, reg, Path(tmp))
            print(f"| host process (reference) | {t['fresh']:.1f} | {t['cached']:.1f} |")
        for label, image in images.items():
            arm64 = label.endswith("(arm64)")
            if label.startswith("engine") and not (args.skip_amd64 and not arm64):
                runs = args.arm64_runs if arm64 else args.runs
                t = cold_starts(image, status, body, runs, reg, Path(tmp))
                print(f"| {label} | {t['fresh']:.1f} | {t['cached']:.1f} |")
        registry_up(reg, False)


if __name__ == "__main__":
    main()

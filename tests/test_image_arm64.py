"""The arm64 engine image, built under qemu user emulation, in a manifest list with the
amd64 one: each platform is picked from the registry and answers like onnxruntime here."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.localengine import free_port
from tests.helpers.arm64_emulation import arm64_cpuinfo_mount
from tests.helpers.paths import ROOT
from tests.helpers.podman import inspect_image, podman, wait_engine_ready

ARCH_BUDGET = 1.10  # the arm64 image within 10% of the amd64 one
SIDE = 160  # the test model's input side


@pytest.fixture(scope="module")
def arm64_image(image: str) -> str:
    host = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    if host.stdout.strip() != "amd64":
        pytest.skip("builds arm64 under emulation on an amd64 host")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "testimage"), "engine", "--platform", "linux/arm64"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/testimage --platform linux/arm64 failed:\n{proc.stderr[-4000:]}")
    print("\n" + "\n".join(line for line in proc.stderr.splitlines() if "[testimage]" in line))
    return proc.stdout.split()[-1]


def _serving(name: str, port: int) -> float:
    """Seconds until the container's engine is ready; its log if it stopped instead."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600:
        try:
            wait_engine_ready(port, timeout=2)
            return time.monotonic() - t0
        except AssertionError:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            if state != "true":
                logs = podman("logs", name, check=False)
                raise AssertionError(
                    f"{name} stopped:\n{logs.stdout}{logs.stderr}"[-3000:]
                ) from None
    raise AssertionError(f"{name}: not ready after 600 s")


# The emulated build of the dependencies takes about 6 minutes when nothing is cached.
@pytest.mark.timeout(3600)
def test_a_manifest_list_serves_each_platform_the_same_answer(
    image, arm64_image, auth_registry, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from tests.helpers.onnx_models import yolov8n_shaped

    amd64, arm64 = inspect_image(image), inspect_image(arm64_image)
    assert (amd64["Architecture"], arm64["Architecture"]) == ("amd64", "arm64")
    print(f"\nengine image amd64 {amd64['Size'] / 1e6:.0f} MB, arm64 {arm64['Size'] / 1e6:.0f} MB")
    assert arm64["Size"] <= amd64["Size"] * ARCH_BUDGET

    ref = f"{auth_registry.host}/edgepipe-engine:{uuid.uuid4().hex[:8]}"
    creds = ["--tls-verify=false", "--creds", f"{auth_registry.username}:{auth_registry.password}"]
    manifest = f"edgepipe-test-{uuid.uuid4().hex[:8]}"
    # The image's user (10001) reads the model: a world-readable folder of its own.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    # YOLOv8n's layers on a 160x160 input: at 640x640 the emulated engine took 38 s of
    # the case to read the 1.2M floats' JSON and write the answer's 0.7M (16x less now);
    # the convolutions still run on NEON there and AVX here.
    model = yolov8n_shaped(shared / "yolov8n.onnx", size=SIDE)
    x = np.random.default_rng(3).random((1, 3, SIDE, SIDE), dtype=np.float32)
    expected = ort.InferenceSession(str(model)).run(None, {"images": x})[0]
    try:
        podman("manifest", "create", manifest)
        for local in (image, arm64_image):
            podman("manifest", "add", manifest, f"containers-storage:{local}")
        # zstd: gzip-compressing the two 400 MB images took 35-40 s of this case on the
        # loaded machine, zstd 15 s (the list and each platform's pick are the same).
        podman("manifest", "push", "--all", "--compression-format", "zstd", *creds, manifest,
               f"docker://{ref}", timeout=600)  # fmt: skip
        for platform, machine in (("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
            # Each platform is pulled from the list by name, as a device of that kind would.
            podman("pull", "--platform", platform, *creds, ref, timeout=600)
            assert inspect_image(ref)["Architecture"] == platform.split("/")[1]
            uname = podman(
                "run", "--rm", "--platform", platform, "--pull=never", ref, "uname", "-m"
            )
            assert uname.stdout.strip() == machine
            name, port = f"multi-{uuid.uuid4().hex[:6]}", free_port()
            emulated = arm64_cpuinfo_mount(shared) if platform == "linux/arm64" else []
            try:
                podman(
                    "run", "-d", "--name", name, "--network=host", "--pull=never",
                    "--platform", platform, "-v", f"{shared}:/models:ro", *emulated,
                    "-e", f"EDGEPIPE_ENGINE_PORT={port}", "-e", "EDGEPIPE_ENGINE_GRPC_PORT=0",
                    ref, "edgepipe-engine", "--model", "/models/yolov8n.onnx",
                )  # fmt: skip
                startup = _serving(name, port)
                (answer,) = EngineClient(f"http://127.0.0.1:{port}", timeout=600).infer_records(
                    "yolov8n", [{"images": x}]
                )
                print(f"{platform}: ready in {startup:.1f}s")
                # Different CPUs, different kernels (NEON against AVX): equal within float
                # tolerance, not bit for bit.
                np.testing.assert_allclose(outputs_of(answer)[0], expected, rtol=1e-3, atol=1e-3)
            finally:
                podman("rm", "-f", name, check=False)
            podman("rmi", ref)
    finally:
        podman("manifest", "rm", manifest, check=False)
        podman("rmi", ref, check=False)  # the tag only: the local images stay

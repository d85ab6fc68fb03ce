"""podman (through scripts/podman), an image's metadata, and waiting until an engine in a
container answers ready."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

from tests.helpers.kube import wait_for
from tests.helpers.paths import ROOT

PODMAN = str(ROOT / "scripts" / "podman")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {proc.stderr}")
    return proc


def inspect_image(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


def wait_engine_ready(port: int, timeout: float = 60) -> float:
    t0 = time.monotonic()

    def ok() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1):
                return True
        except OSError:
            return False

    wait_for(f"the engine on port {port}", ok, timeout, interval=0.05)
    return time.monotonic() - t0


def docker_run_as_podman(docker_run: str, name: str, port: int, volume: str) -> list[str]:
    """A printed ``docker run`` line as podman runs it here: host networking (the registry
    is on the host's loopback), so the engine's ports come from EDGEPIPE_ENGINE_PORT and
    EDGEPIPE_ENGINE_GRPC_PORT instead of -p. ``$VAR`` words are left to the caller's env,
    as a shell would expand them; ``-e VAR`` without a value passes VAR through."""
    import os
    import shlex

    from edgepipe.localengine import free_port

    words = shlex.split(docker_run.replace("\\\n", " "))
    assert words[:2] == ["docker", "run"]
    extra = [
        "-d", "--name", name, "--network=host",
        "-e", f"EDGEPIPE_ENGINE_PORT={port}", "-e", f"EDGEPIPE_ENGINE_GRPC_PORT={free_port()}",
        "-v", f"{volume}:/var/cache/edgepipe",
    ]  # fmt: skip
    return [os.path.expandvars(w) for w in [PODMAN, "run", *extra, *words[2:]]]

"""A real OCI registry for tests: Debian's docker-registry on loopback, optionally with
htpasswd (bcrypt) auth. It can be stopped and started again on the same port and storage."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from edgepipe.localengine import free_port


class Registry:
    def __init__(
        self,
        base: Path,
        *,
        auth: bool,
        username: str = "edge",
        password: str = "s3cret-pass",
        address: str = "127.0.0.1",
    ) -> None:
        self.base = base
        self.address = address
        self.auth = auth
        self.username = username if auth else None
        self.password = password if auth else None
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        base.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log: {level: warn}",
            f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, delete: {{enabled: true}}}}",
            f"http: {{addr: {address}:{self.port}, secret: edgepipe-test}}",
        ]
        if auth:
            htpasswd = base / "htpasswd"
            out = subprocess.run(
                ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True
            ).stdout
            htpasswd.write_text(out)
            lines.append(f"auth: {{htpasswd: {{realm: edgepipe-test, path: {htpasswd}}}}}")
        self.config = base / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self) -> Registry:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise RuntimeError("docker-registry is not installed (scripts/setup --dev)")
        self._log = open(self.base / "registry.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [exe, "serve", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return self
            except urllib.error.HTTPError:  # 401 with auth: it is up
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"registry on {self.host} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
            self._log.close()

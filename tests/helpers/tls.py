"""A throwaway certificate authority made with openssl: a server certificate for loopback,
a client certificate, and a second server certificate to rotate to."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class Pki:
    """Files of a CA and what it signed, all PEM."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def issue(self, name: str, cn: str, server: bool) -> None:
        """A key and a certificate signed by the CA; a server's names 127.0.0.1 and localhost."""
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=self.folder,
        )  # fmt: skip
        ext = self.folder / f"{name}.ext"
        if server:
            ext.write_text(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            )
        else:
            ext.write_text("extendedKeyUsage=clientAuth\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext.name,
            "-out", f"{name}.crt", cwd=self.folder,
        )  # fmt: skip


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate ``server`` and a client certificate ``client``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=edgepipe test CA", cwd=folder,
    )  # fmt: skip
    pki = Pki(folder)
    pki.issue("server", "edgepipe engine", server=True)
    pki.issue("client", "edgepipe client", server=False)
    return pki

"""Pointer moves of a wave, one by one against ``fleet.move_pointers``, on the htpasswd registry.

``.venv/bin/python bench/pointer_moves.py --edges 1000``: N edges' pointers moved to a new
manifest the old way (per edge a HEAD, a GET of the manifest and a PUT, one edge after the
other) and N others with ``fleet.move_pointers`` (HEADs, then one GET, then the PUTs, 8
threads), from no pointer and then from the first version to a second; then the concurrent
call once more (every pointer already there: HEADs only). Prints seconds and the load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgepipe import fleet, oci  # noqa: E402
from tests.helpers.oci_registry import Registry  # noqa: E402

REPO = "edge/pipelines/moves"


def version(client: oci.Client, tag: str) -> str:
    empty = client.push_bytes(REPO, b"{}", oci.EMPTY_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": oci.MANIFEST, "config": empty,
                "layers": [empty], "annotations": {"org.opencontainers.image.version": tag}}  # fmt: skip
    return client.put_manifest(REPO, manifest, tag=tag)


def one_by_one(client: oci.Client, digest: str, edges: list[str]) -> float:
    t = time.monotonic()
    for edge in edges:
        if fleet.pointer_digest(client, REPO, edge) != digest:
            fleet.move_pointer(client, REPO, digest, edge)
    return time.monotonic() - t


def together(clients: fleet.Clients, digest: str, edges: list[str]) -> float:
    t = time.monotonic()
    fleet.move_pointers(clients, REPO, digest, edges)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--edges", type=int, default=1000)
    n = ap.parse_args().edges
    with tempfile.TemporaryDirectory() as d:
        reg = Registry(Path(d) / "registry", auth=True).start()
        try:

            def factory() -> oci.Client:
                return oci.Client(reg.host, oci.Credentials(reg.username, reg.password),
                                  plain_http=True)  # fmt: skip

            client, clients = factory(), fleet.Clients(factory)
            v1, v2 = version(client, "v1"), version(client, "v2")
            serial = [f"serial-{i:04d}" for i in range(n)]
            threaded = [f"threaded-{i:04d}" for i in range(n)]
            rows = []
            for digest, label in ((v1, "no pointer -> v1"), (v2, "v1 -> v2")):
                rows.append((label, one_by_one(client, digest, serial),
                             together(clients, digest, threaded)))  # fmt: skip
            again = together(clients, v2, threaded)
        finally:
            reg.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"| {n} edges | one by one | move_pointers (8 threads) |\n|---|---:|---:|")
    for label, a, b in rows:
        print(f"| {label} | {a:.1f} s | {b:.1f} s |")
    print(f"| again (all there) | - | {again:.1f} s |\nload average after: {load}")


if __name__ == "__main__":
    main()

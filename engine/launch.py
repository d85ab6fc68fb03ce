"""The ``edgepipe-engine`` console script: names the ``engine`` extra when it is missing."""

from __future__ import annotations

from edgepipe.extras import launch


def main() -> None:
    launch("edgepipe.engine.cli", "main", "engine", "edgepipe-engine")

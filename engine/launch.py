"""The ``edgepipe-engine`` console script: names the ``engine`` extra when it is missing."""

from __future__ import annotations

from edgepipe.extras import load


def main() -> None:
    load("edgepipe.engine.cli", "main", "engine", "edgepipe-engine")()

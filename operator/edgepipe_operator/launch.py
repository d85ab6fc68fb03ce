"""The ``edgepipe-operator`` console script: names the ``operator`` extra when it is missing."""

from __future__ import annotations

from edgepipe.extras import load


def main() -> None:
    load("edgepipe_operator.cli", "main", "operator", "edgepipe-operator")()

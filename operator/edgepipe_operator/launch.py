"""The ``edgepipe-operator`` console script: names the ``operator`` extra when it is missing."""

from __future__ import annotations

from edgepipe.extras import launch


def main() -> None:
    launch("edgepipe_operator.cli", "main", "operator", "edgepipe-operator")

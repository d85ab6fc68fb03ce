"""Console scripts that name the missing pip extra instead of failing with an ImportError.

``pip install edgepipe`` is the shared library only; each program has an extra
(``edgepipe[client]``, ``edgepipe[engine]``, ``edgepipe[operator]``). A program started
without its extra says which one to install and exits 1.
"""

from __future__ import annotations

import importlib
import sys

# The top-level packages of this project: a missing one of these is a broken install,
# never a missing extra, so its ImportError is not reworded.
OWN = {"edgepipe", "edgepipe_operator"}


def launch(module: str, function: str, extra: str, prog: str) -> None:
    """Run ``module.function()``; if it (or anything it imports on the way, at once or
    later, as the operator imports kopf) lacks a module, exit 1 naming ``extra``."""
    try:
        getattr(importlib.import_module(module), function)()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing in OWN:
            raise
        sys.stderr.write(
            f"{prog}: needs the '{extra}' extra (no module named {missing!r}): "
            f"pip install 'edgepipe[{extra}]'\n"
        )
        raise SystemExit(1) from None


def edgepipe() -> None:
    """The ``edgepipe`` command."""
    launch("edgepipe.cli", "run", "client", "edgepipe")

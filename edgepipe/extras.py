"""Console scripts that name the missing pip extra instead of failing with an ImportError.

``pip install edgepipe`` is the shared library only; each program has an extra
(``edgepipe[client]``, ``edgepipe[engine]``, ``edgepipe[operator]``). A program started
without its extra says which one to install and exits 1.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# The top-level packages of this project: a missing one of these is a broken install,
# never a missing extra, so its ImportError is not reworded.
OWN = {"edgepipe", "edgepipe_operator"}


def load(module: str, function: str, extra: str, prog: str) -> Callable[[], object]:
    """``module.function``, or exit 1 naming the extra that ``module`` needs."""
    try:
        return getattr(importlib.import_module(module), function)
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
    load("edgepipe.cli", "run", "client", "edgepipe")()

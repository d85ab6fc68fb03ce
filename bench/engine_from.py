"""Run ``edgepipe-engine`` with its package (``edgepipe.engine``) taken from another source
tree, for a before/after comparison in one bench run: ``engine_from.py DIR ARGS...``, where
DIR holds an ``engine/`` directory (``git archive REV engine | tar -x -C DIR``).

The rest of ``edgepipe`` comes from this checkout; only the engine package is swapped.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main() -> None:
    where = Path(sys.argv[1]).resolve() / "engine"
    if not (where / "__init__.py").exists():
        sys.exit(f"engine_from.py: no engine package in {where}")
    finder = next(
        (
            m
            for name, m in sys.modules.items()
            if name.startswith("__editable__") and hasattr(m, "MAPPING")
        ),
        None,
    )
    if finder is None:
        sys.exit("engine_from.py: edgepipe is not installed in editable mode")
    finder.MAPPING["edgepipe.engine"] = str(where)
    cli = importlib.import_module("edgepipe.engine.cli")
    assert Path(cli.__file__).resolve().parent == where, cli.__file__
    cli.main(sys.argv[2:])


if __name__ == "__main__":
    main()

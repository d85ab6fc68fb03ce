"""Where things are: the repository root that tests and benches find files from."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

"""A context manager whose loop runs on a thread of its own while the with block lasts."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """``with`` starts ``_run`` on a daemon thread; leaving sets ``self._stop`` (which
    ``_run`` watches) and waits up to ``join_seconds`` for the thread."""

    join_seconds = 10.0

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(self.join_seconds)

    def _run(self) -> None:
        raise NotImplementedError

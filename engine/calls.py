"""The engine's model calls, every model's: how many run now, what a call alone gets, and
which models hold a session for concurrent calls. One ``Calls`` per engine app
(``server.create_app``), shared by the models its loads make (``wiring.Loading``)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A session for concurrent calls is dropped too when the calls have started alone for
# this long (s): a lone client's requests do not keep it.
AMONG_KEEP_S = 1.0


def _no_requests() -> int:
    return 0


@dataclass
class Calls:
    """A call that starts alone (no other model call running, no other request in flight)
    takes the cores (``OnnxModel.session``), one that starts beside others a call's share.

    ``lone_threads``: a lone call's intra-op threads (``CONFIG_CPUS``; 0: as many as any
    call's). ``spinning``: whether onnxruntime's intra-op threads spin for work: "on",
    "calls" (while a call runs, stopped when the last call returns) or "off"
    (``Settings.intra_op_spinning``). ``requests``: how many requests are in flight, set by
    the data plane. ``keep_among_s``: ``AMONG_KEEP_S``."""

    lone_threads: int = 0
    spinning: str = "calls"
    requests: Callable[[], int] = _no_requests
    keep_among_s: float = AMONG_KEEP_S
    running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The models that made a session for concurrent calls: ``rest`` drops those sessions
    # when the engine is idle (``memory.IdleTrim``), so RSS at rest is one session per model.
    among_made: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet, repr=False)

    def begin(self) -> bool:
        """One more call runs; whether it starts alone."""
        with self.lock:
            self.running += 1
            return self.running == 1 and self.requests() <= 1

    def end(self) -> None:
        with self.lock:
            self.running -= 1

    def rest(self) -> None:
        """Drop every model's session for concurrent calls (the next burst makes it again)."""
        with self.lock:
            models = list(self.among_made)
        for model in models:
            model.drop_among()

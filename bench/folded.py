"""A py-spy profile (``--format raw --threads``: one line per stack, its count last) summed
up: samples by thread, by the package of the innermost frame, by what our code and kopf do,
and the top functions by self and by total samples.

    .venv/bin/python bench/folded.py DIR/rollout-1000.folded [DIR/rollout-500.folded ...]
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# The package of a frame's file, most specific first.
PACKAGES = (
    ("edgepipe_operator/", "ours: operator"),
    ("/edgepipe/", "ours: library"),
    ("/kopf/", "kopf"),
    ("/aiohttp/", "aiohttp"),
    ("/yarl/", "aiohttp"),
    ("/multidict/", "aiohttp"),
    ("/json/", "json"),
    ("/pydantic", "pydantic"),
    ("/asyncio/", "asyncio"),
    ("/logging/", "logging"),
    ("ssl.py", "ssl"),
    ("/concurrent/", "threads"),
    ("threading.py", "threads"),
)


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames root first as (function, file), count) per line."""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part)
            frames.append((m["func"], m["file"]) if m else (part, ""))
        out.append((frames, int(count)))
    return out


def package(file: str) -> str:
    where = "/" + file  # py-spy names files from their package: kopf/_cogs/..., json/...
    return next((name for key, name in PACKAGES if key in where), "other")


# Innermost frames that wait (off the GIL): py-spy's idle detection misses some under load.
WAITS = (
    "_worker",  # a handler thread's SimpleQueue.get (C, no frame of its own)
    "EpollSelector.select",
    "Condition.wait",
    "Event.wait",
    "Lock.acquire",
    "_wait_for_tstate_lock",
    "Thread.join",
)


def _named(frames: list[tuple[str, str]], *suffixes: str) -> bool:
    return any(f.rsplit(".", 1)[-1] in suffixes for f, _ in frames)


def thread_kind(name: str) -> str:
    """From py-spy's thread frame, ``thread (TID): NAME``."""
    name = name.partition(": ")[2]
    if name.startswith("MainThread"):
        return "event loop (main thread)"
    if name.startswith("ThreadPoolExecutor"):
        return "handler threads"
    return f"other threads ({name.rstrip('_0123456789')})"


# Where in kopf a stack is, by the files on it (the first match wins).
KOPF_PARTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("kopf/_cogs/clients/watching.py", "kopf/_cogs/clients/api.py"),
        "kopf: watch streams and its own API calls (reading, parsing)",
    ),
    (("kopf/_core/engines/indexing.py",), "kopf: indexing (around our index functions)"),
    (("kopf/_core/actions/",), "kopf: invoking handlers (causes, kwargs, patches, progress)"),
    (
        ("kopf/_core/reactor/queueing.py", "kopf/_core/reactor/processing.py"),
        "kopf: event processing (queues, workers, causes)",
    ),
    (("kopf/_core/engines/posting.py",), "kopf: posting k8s Events"),
    (("kopf/",), "kopf: other"),
)


def activity(frames: list[tuple[str, str]]) -> str:
    """What the sample was doing, from its frames: the operator's own handlers and index
    functions (by module), kopf's own processing of an event, reading watch streams, ..."""
    # What the loop ran: the frames under its dispatch (kopf's run() and ours are above it).
    runs = [i for i, (f, _) in enumerate(frames) if f in ("Handle._run", "TimerHandle._run")]
    if runs:
        frames = frames[runs[0] + 1 :]
    ours = [f for f in frames if package(f[1]) == "ours: operator" and not f[1].endswith("cli.py")]
    if ours:  # the outermost of our frames says which handler or index it was
        func, file = ours[0]
        return f"ours: {Path(file).stem}.{func}"
    files = " ".join(f for _, f in frames)
    for paths, label in KOPF_PARTS:  # the first that matches, in this order
        if any(path in files for path in paths):
            return label
    if _named(frames, "_worker"):
        return "threads: handing work over"
    if any("importlib" in f for _, f in frames):
        return "imports"
    if _named(frames, "_call_set_state", "_set_state", "_copy_future_state"):
        return "event loop: results back from handler threads"
    if (frames and package(frames[-1][1]) in ("asyncio", "ssl", "aiohttp")) or "ssl" in files:
        return "event loop: I/O (asyncio, ssl, aiohttp)"
    return "other: " + package(frames[-1][1]) if frames else "other"


def summary(path: Path, top: int = 25) -> str:
    stacks = parse(path)
    waiting = sum(c for f, c in stacks if f and f[-1][0] in WAITS)
    stacks = [(f, c) for f, c in stacks if f and f[-1][0] not in WAITS]
    total = sum(c for _, c in stacks) or 1
    threads: Counter[str] = Counter()
    leaf_pkg: Counter[str] = Counter()
    acts: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    for frames, count in stacks:
        body = [f for f in frames if not f[0].startswith(("thread (", "process "))]
        threads[thread_kind(frames[0][0] if frames else "")] += count
        if body:
            leaf = body[-1]
            leaf_pkg[package(leaf[1])] += count
            self_fn[f"{leaf[0]} ({Path(leaf[1]).parent.name}/{Path(leaf[1]).name})"] += count
        acts[activity(body)] += count
        for name in {f"{f} ({Path(p).parent.name}/{Path(p).name})" for f, p in body}:
            total_fn[name] += count

    def table(title: str, counter: Counter[str], rows: int = top) -> list[str]:
        lines = [f"\n# {title}"]
        for name, n in counter.most_common(rows):
            lines.append(f"{100 * n / total:6.1f}% {n:8d}  {name}")
        return lines

    lines = [f"{path.name}: {total} samples on the CPU ({waiting} more waiting, left out)"]
    lines += table("by thread", threads)
    lines += table("by what it was doing", acts, 40)
    lines += table("by the package of the innermost frame", leaf_pkg)
    lines += table("functions by self samples", self_fn)
    lines += table("functions by total samples", total_fn, 40)
    return "\n".join(lines) + "\n"


def main() -> None:
    for arg in sys.argv[1:]:
        print(summary(Path(arg)))


if __name__ == "__main__":
    main()

"""``edgepipe publish push --waves`` without a cluster: pointers move wave by wave as the edges
turn Current, a version that breaks after its swap aborts the rollout and moves the wave
back. Real htpasswd registry, three edge engines as real processes, signed publishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from edgepipe import fleet, oci
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.background import Background
from tests.helpers.cli import ep, one_line_error
from tests.helpers.fleet import Load, edge_env, keypair, status, wait_status
from tests.helpers.publishing import creds_env

EDGES = ["dock-1", "dock-2", "dock-3"]
NAME = "waves"  # the pipeline: its own pointers and status records in the shared registry
FINITE = [{"name": "finite", "expr": "all(isfinite(y))"}]


def add(folder: Path, value: float) -> dict:
    model = m.add_constant(folder / f"add-{value}.onnx", value)
    return {"name": NAME, "steps": [{"model": {"name": "add", "path": str(model)}}],
            "validations": FINITE}  # fmt: skip


class Fleet:
    """Three edges following their pointers, and the registry they follow."""

    def __init__(self, reg, folder: Path) -> None:
        self.reg, self.folder = reg, folder
        self.key, self.pub = keypair(folder)
        self.client = oci.Client(
            reg.host, oci.Credentials(reg.username, reg.password), plain_http=True
        )
        self.repository = f"edge/pipelines/{NAME}"
        self.engines: dict[str, EngineProcess] = {}

    def push(self, config: dict, *flags: str) -> subprocess.CompletedProcess:
        """``edgepipe publish push`` to the edges, signed; the process (its exit code, -o json)."""
        path = self.folder / f"{NAME}-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(config))
        edges = [a for e in EDGES for a in ("--edge", e)]
        args = ["publish", "push", str(path), "--registry", f"{self.reg.host}/edge", "-o", "json"]
        return ep(*args, *edges, "--sign-key", str(self.key), *flags, env=creds_env(self.reg))

    def pointers(self) -> dict[str, str | None]:
        return {e: fleet.pointer_digest(self.client, self.repository, e) for e in EDGES}


class Watcher(Background):
    """Sweeps the pointers, then each edge's /status, every 0.1 s, keeping every sweep: a
    pointer seen moved was moved before the statuses read after it."""

    def __init__(self, f: Fleet) -> None:
        self.fleet = f
        self.sweeps: list[tuple[dict[str, str | None], dict[str, dict]]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            pointers = self.fleet.pointers()
            states = {e: status(p.url) for e, p in self.fleet.engines.items()}
            self.sweeps.append((pointers, states))
            self._stop.wait(0.1)


@pytest.fixture(scope="module")
def edges3(auth_registry, tmp_path_factory):
    """Three edge engines on v1 (pushed to all three at once, as without --waves)."""
    folder = tmp_path_factory.mktemp("waves")
    f = Fleet(auth_registry, folder)
    proc = f.push(add(folder, 1.0))
    assert proc.returncode == 0, proc.stderr
    v1 = json.loads(proc.stdout)
    for edge in EDGES:
        env = edge_env(auth_registry, v1, edge, folder / f"cache-{edge}", f.pub)
        f.engines[edge] = EngineProcess(
            env=env, log_path=folder / f"{edge}.log", timeout=90, wait_ready=False
        )
    try:
        with ThreadPoolExecutor(len(EDGES)) as pool:
            list(pool.map(lambda e: e.start(), f.engines.values()))
        for e in f.engines.values():
            e.wait_for("/health/ready", 200)
            wait_status(e.url, "Current", v1["pipelineVersion"], timeout=30)
        yield f
    finally:
        for e in f.engines.values():
            e.stop()


def test_waves_move_in_order_each_after_the_last_is_current(edges3: Fleet) -> None:
    f = edges3
    with Watcher(f) as watch:
        proc = f.push(add(f.folder, 2.0), "--waves", "1,50%,100%", "--wave-poll", "0.2")
    assert proc.returncode == 0, proc.stderr
    v2 = json.loads(proc.stdout)
    ro = v2["rollout"]
    assert ro["phase"] == "Complete" and ro["updated"] == 3 and ro["failed"] == 0
    assert [w["edges"] for w in ro["waves"]] == [["dock-1"], ["dock-2"], ["dock-3"]]
    # Progress per wave, in order, on stderr.
    lines = [ln.strip() for ln in proc.stderr.splitlines()]
    moved = [ln for ln in lines if "pointers of" in ln]
    assert moved == [f"wave {i}/3: pointers of dock-{i} moved" for i in (1, 2, 3)], lines
    assert "rollout complete: 3 updated, 0 pending, 0 failed" in lines
    # No edge's pointer moved before every edge of the earlier waves was Current on v2.
    digest = f.pointers()["dock-1"]
    assert digest and set(f.pointers().values()) == {digest}
    seen_moved = set()
    for pointers, states in watch.sweeps:
        for i, edge in enumerate(EDGES):
            if pointers[edge] != digest:
                continue
            seen_moved.add(edge)
            for earlier in EDGES[:i]:
                st = states[earlier]
                assert st["state"] == "Current", (edge, earlier, st)
                assert st["running"]["version"] == v2["pipelineVersion"], (edge, earlier, st)
    assert seen_moved == set(EDGES)
    # The watcher saw the waves apart: wave 1 moved while wave 3 had not.
    assert any(p["dock-1"] == digest != p["dock-3"] for p, _ in watch.sweeps)
    for e in f.engines.values():
        wait_status(e.url, "Current", v2["pipelineVersion"], timeout=5)


def test_a_version_failing_after_its_swap_aborts_and_moves_the_wave_back(edges3: Fleet) -> None:
    f = edges3
    before = f.pointers()
    running = {e: status(p.url)["running"]["version"] for e, p in f.engines.items()}
    nan = m.sqrt_of_difference(f.folder / "sqrt.onnx", 1.0)  # NaN on the rows Load sends
    broken = {"name": NAME, "steps": [{"model": {"name": "add", "path": str(nan)}}],
              "validations": FINITE}  # fmt: skip
    flags = ("--waves", "1,100%", "--max-failures", "0", "--wave-poll", "0.2")
    with Watcher(f) as watch, Load(f.engines["dock-1"].url, NAME):
        proc = f.push(broken, *flags)
    one_line_error(proc, "aborted at wave 1/2")
    assert "failing edges: dock-1 (" in proc.stderr and "maxFailures (0)" in proc.stderr
    assert "edge dock-1: pointer back to" in proc.stderr
    # Wave 1's pointer is back; waves 2's never left.
    assert f.pointers() == before
    bad = {p["dock-1"] for p, _ in watch.sweeps} - {before["dock-1"]}
    assert len(bad) == 1, bad  # the watcher saw dock-1 on the broken version
    for pointers, _ in watch.sweeps:
        assert pointers["dock-2"] == before["dock-2"] and pointers["dock-3"] == before["dock-3"]
    rolled = [s["dock-1"] for _, s in watch.sweeps if s["dock-1"]["state"] == "RolledBack"]
    assert rolled, "dock-1 never reported RolledBack"
    # Back on its pointer's version, dock-1 is Current on what it ran before; the others never moved.
    wait_status(f.engines["dock-1"].url, "Current", running["dock-1"], timeout=10)
    for edge in ("dock-2", "dock-3"):
        assert {s[edge]["running"]["version"] for _, s in watch.sweeps} == {running[edge]}


def test_offline_edges_are_pending_after_the_wave_timeout(auth_registry, tmp_path) -> None:
    """Edges that never report: each wave waits --wave-timeout, then counts them pending."""
    f = Fleet(auth_registry, tmp_path)
    cfg = {**add(tmp_path, 7.0), "name": "waves-offline"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t = time.monotonic()
    proc = ep("publish", "push", str(path), "--registry", f"{auth_registry.host}/edge",
              "--edge", "far-1", "--edge", "far-2", "--waves", "1,2", "--wave-timeout", "1",
              "--wave-poll", "0.2", "-o", "json", env=creds_env(auth_registry))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ro = json.loads(proc.stdout)["rollout"]
    assert ro["phase"] == "Complete" and (ro["updated"], ro["pending"], ro["failed"]) == (0, 2, 0)
    assert [w["state"] for w in ro["waves"]] == ["Done", "Done"]
    assert time.monotonic() - t < 30
    del f


def test_ctrl_c_leaves_the_pointers_as_they_are(auth_registry, tmp_path) -> None:
    cfg = {**add(tmp_path, 8.0), "name": "waves-stop"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["publish", "push", str(path), "--registry", f"{auth_registry.host}/edge",
            "--edge", "far-1", "--edge", "far-2", "--waves", "1,2", "--wave-poll", "0.2"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepipe.cli", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, **creds_env(auth_registry)},
    )
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "pointers of far-1 moved" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(20) == 130, "".join(lines) + rest
    assert "interrupted at wave 1/2: the pointers stay as they are (moved: far-1)" in rest
    client = oci.Client(
        auth_registry.host,
        oci.Credentials(auth_registry.username, auth_registry.password),
        plain_http=True,
    )
    repo = "edge/pipelines/waves-stop"
    assert fleet.pointer_digest(client, repo, "far-1") is not None
    assert fleet.pointer_digest(client, repo, "far-2") is None


BAD_FLAGS = [
    (("--waves", "1,x"), "Invalid value for '--waves': item 2 ('x') is neither"),
    (("--waves", "2,1,100%"), "Invalid value for '--waves': item 2 ('1'): a cumulative"),
    (("--waves", "50%,40%,100%"), "Invalid value for '--waves': waves[1].percent: 40 does not"),
    (("--waves", "1,2"), "Invalid value for '--waves': waves[1]: the last wave must reach"),
    (
        ("--waves", "100%", "--max-failures", "4"),
        "Invalid value for '--max-failures': maxFailures: 4 is over the edge count (3)",
    ),
    (("--waves", "100%", "--wave-timeout", "0"), "Invalid value for '--wave-timeout': "),
    (("--max-failures", "1"), "--max-failures needs --waves"),
]


def test_bad_wave_flags_name_the_flag(tmp_path) -> None:
    from click.testing import CliRunner

    from edgepipe.cli import main

    model = m.add_constant(tmp_path / "a.onnx", 1.0)
    edges = [a for e in EDGES for a in ("--edge", e)]
    # Refused before any work: the registry is not even there.
    args = ["publish", "push", "--model", str(model), "--registry", "127.0.0.1:9/edge", *edges]
    proc = ep(*args, *BAD_FLAGS[0][0])  # as a user runs it: one line, no traceback
    one_line_error(proc, BAD_FLAGS[0][1])
    for flags, words in BAD_FLAGS[1:]:
        result = CliRunner().invoke(main, [*args, *flags])
        assert result.exit_code == 2 and words in result.output, (flags, result.output)

"""What a new user hits with the CLI, round 2 (issue 24): logs of a name nobody published,
no kubeconfig, short versions, one docker line per edge, Arrow input printed like JSON,
flags with help and one --timeout rule, and progress that reads well off a terminal."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pytest

from edgepipe.cli import main
from edgepipe.cli.common import Transfer
from edgepipe.client.cluster import ClusterError, find_version
from edgepipe.client.status import WAIT_SECONDS
from tests.helpers.cli import ep, one_line_error
from tests.helpers.engine_http import arrow_table_bytes
from tests.helpers.engines import EngineFactory


def commands(cmd: click.Command = main, path: tuple[str, ...] = ("edgepipe",)):
    """Every command of the click tree, with its path."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))


def options(name: str):
    for path, cmd in commands():
        for param in cmd.params:
            if isinstance(param, click.Option) and name in param.opts:
                yield " ".join(path), param


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{' '.join(path)} {param.opts[-1]}"
        for path, cmd in commands()
        for param in cmd.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not missing, missing
    assert all((cmd.help or "").strip() for _, cmd in commands())


def test_one_timeout_rule_and_output_formats() -> None:
    timeouts = dict(options("--timeout"))
    assert len(timeouts) >= 6  # deploy, undeploy, rollback, publish create, add/remove-edge
    assert {t.default for t in timeouts.values()} == {WAIT_SECONDS}
    assert all("every command that waits" in t.help for t in timeouts.values())
    formats = dict(options("--output"))
    assert "edgepipe publish keygen" in formats
    for where, opt in formats.items():
        assert {"json", "yaml"} <= set(opt.type.choices), where


def test_keygen_speaks_json(tmp_path: Path) -> None:
    proc = ep("publish", "keygen", str(tmp_path / "k"), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    keys = json.loads(proc.stdout)
    assert keys["privateKey"] == str(tmp_path / "k.key") and Path(keys["publicKey"]).exists()
    assert keys["publicPem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_no_kubeconfig_says_what_was_looked_for(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KUBECONFIG": ""}
    proc = ep("pipeline", "list", env=env)
    one_line_error(proc, "no kubeconfig found: KUBECONFIG is not set and there is no ~/.kube")
    for hint in ("--kubeconfig", "KUBECONFIG", "scripts/testcluster"):
        assert hint in proc.stderr
    # A KUBECONFIG list (kubectl merges its files): each one named.
    listed = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    proc = ep("pipeline", "list", env={**env, "KUBECONFIG": listed})
    one_line_error(proc, f"KUBECONFIG lists {tmp_path / 'a'}, {tmp_path / 'b'}, none of which")


INSECURE = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users: [{name: u, user: {token: t}}]
"""


def test_the_tls_warning_is_once_per_process(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "kubeconfig"
    config.write_text(INSECURE)
    code = (
        "from edgepipe.client.cluster import Client\n"
        f"for _ in range(3): Client(kubeconfig={str(config)!r}, namespace='x')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("skips TLS verification") == 1, proc.stderr


def test_short_versions_as_git_takes_them() -> None:
    history = ["d3ac7603-1111-4000-8000-000000000000", "d3ac7604-2222-4000-8000-000000000000"]
    assert find_version("p", history, "d3ac7603") == history[0]
    assert find_version("p", history, history[1]) == history[1]
    with pytest.raises(ClusterError, match="too short: give at least 8 characters"):
        find_version("p", history, "d3ac760")
    both = [*history, "d3ac7603-3333-4000-8000-000000000000"]
    with pytest.raises(ClusterError, match="ambiguous") as info:
        find_version("p", both, "d3ac7603")
    assert history[0] in str(info.value) and both[2] in str(info.value)
    with pytest.raises(ClusterError, match="has no version ffffffff; its versions are d3ac"):
        find_version("p", history, "ffffffff")


def test_arrow_input_prints_what_json_input_prints(
    start_engine: EngineFactory, models_dir: Path, tmp_path: Path
) -> None:
    engine = start_engine("--model", str(models_dir / "add1.onnx"))
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"x": row.tolist()} for row in x]))
    table = tmp_path / "t.arrow"
    table.write_bytes(
        arrow_table_bytes(pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)}))
    )
    text = [ep("infer", "add1", "--engine", engine.url, "--input", str(f)) for f in (rows, table)]
    assert all(p.returncode == 0 for p in text), [p.stderr for p in text]
    for proc in text:
        assert proc.stdout.splitlines()[1].startswith("row 1: add1 / add1: Float[1, 4]")
    out = [
        json.loads(
            ep("infer", "add1", "--engine", engine.url, "--input", str(f), "-o", "json").stdout
        )
        for f in (rows, table)
    ]
    assert [r["outputs"] for r in out[0]] == [r["outputs"] for r in out[1]]
    assert out[1][1]["outputs"][0]["Float"]["data"] == [5.0, 6.0, 7.0, 8.0]


def test_publish_push_logs_and_progress_off_a_terminal(
    registry, models_dir: Path, tmp_path: Path
) -> None:
    prefix = f"{registry.host}/round2"
    model = models_dir / "add1.onnx"
    pushed = ep("model", "push", str(model), "--registry", prefix)
    assert pushed.returncode == 0, pushed.stderr
    # Plain lines: the hashing phase named, no bar, no unknown total, nothing wrapped.
    assert pushed.stderr.startswith(f"hashing {model.name} (")
    assert "?" not in pushed.stderr and "━" not in pushed.stderr
    assert f"pushing {model.name}: " in pushed.stderr
    proc = ep(
        "publish", "push", "--model", str(model), "--registry", prefix,
        "--edge", "north", "--edge", "south",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "?" not in proc.stderr and "━" not in proc.stderr
    chart = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Helm Chart Reference:"))
    ref = chart.split()[-1]
    assert f"  chart pushed: {ref}" in proc.stderr.splitlines()  # one line, however long
    # One docker line per edge, each under its name.
    for edge in ("north", "south"):
        block = proc.stdout.split(f"Run it at edge {edge}:\n", 1)[1]
        assert f"-e EDGE_NAME={edge}" in block.split("\n\n", 1)[0]
    assert "Run it at the edge:" not in proc.stdout

    # Logs: a name nobody published is an error naming it and the registry ...
    typo = ep("logs", "add2", "--registry", prefix)
    one_line_error(typo, f"pipeline 'add2' was never published to {prefix}")
    assert "published there: add1" in typo.stderr
    # ... a published pipeline without uploads is not, in every format.
    quiet = ep("logs", "add1", "--registry", prefix)
    assert quiet.returncode == 0 and "no inference logs uploaded (yet)" in quiet.stdout
    as_yaml = ep("logs", "add1", "--registry", prefix, "-o", "yaml")
    assert as_yaml.returncode == 0 and as_yaml.stdout.strip() == "[]"


def test_a_terminal_bar_appears_with_the_first_bytes() -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with Transfer("publishing p", terminal=True, console=console) as transfer:
        transfer.log("  chart pushed: " + "x" * 150)
    assert "/?" not in screen.getvalue() and "bytes" not in screen.getvalue()  # no empty bar
    assert "x" * 150 in screen.getvalue()  # a log line is not hard-wrapped
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with Transfer("pushing m", terminal=True, console=console) as transfer:
        transfer.update(50, 100)
        transfer.update(100, 100)
    assert "pushing m" in screen.getvalue() and "/?" not in screen.getvalue()

"""Edges that follow their Publish: a pointer tag per edge, polled every second here; a new
version verified, downloaded beside the running one, smoke-tested, switched to with no
failed request, watched in probation and rolled back by the edge itself when it breaks.
Real registry with htpasswd, engines as real processes, signed publishes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgepipe import fleet, oci
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.engine_http import metric
from tests.helpers.fleet import (
    CountingProxy,
    Load,
    answer,
    edge_env,
    keypair,
    push,
    status,
    wait_status,
)

EDGE = "dock-1"


def add(folder: Path, value: float, name: str = "upd", pad_bytes: int = 0) -> dict:
    model = m.add_constant(folder / f"add-{value}.onnx", value, pad_bytes=pad_bytes)
    return {"name": name, "steps": [{"model": {"name": "add", "path": str(model)}}]}


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    return tmp_path


def engine(env: dict, log: Path) -> EngineProcess:
    return EngineProcess(env=env, log_path=log, timeout=90)


def test_v1_to_v2_under_load_with_no_failed_request(own_registry, tmp_path) -> None:
    key, pub = keypair(tmp_path)
    v1 = push(own_registry, tmp_path, add(tmp_path, 1.0), "--edge", EDGE, "--sign-key", str(key))
    env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", pub)
    assert fleet.pointer_url(v1["pipelineUrl"], EDGE) in v1["edges"][0]["dockerRunCommand"]
    with engine(env, tmp_path / "e.log") as e:
        st = status(e.url)
        assert st["state"] == "Current" and st["running"]["version"] == v1["pipelineVersion"]
        with Load(e.url, "upd") as load:
            time.sleep(1.5)
            v2 = push(
                own_registry, tmp_path, add(tmp_path, 2.0), "--edge", EDGE, "--sign-key", str(key)
            )
            st = wait_status(e.url, "Current", v2["pipelineVersion"], timeout=30)
            time.sleep(1)
        assert not load.failures, load.failures[:3]
        assert len(load.changes()) == 2, load.changes()  # v1's model, then v2's, once
        assert st["previous"]["version"] == v1["pipelineVersion"]
        assert st["running"]["digest"].startswith("sha256:")
        assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 2.0
        assert metric(e, 'edgepipe_update_total{result="applied"}') == 1
        assert metric(e, f'edgepipe_running_version_info{{version="{v2["pipelineVersion"]}"}}') == 1
    # The registry holds the same status, with lastSeen, for the cluster to read.
    client = oci.Client(
        own_registry.host, oci.Credentials(own_registry.username, own_registry.password),
        plain_http=True,
    )  # fmt: skip
    reported = fleet.read_status(client, "edge", "upd", EDGE)
    assert reported["running"]["version"] == v2["pipelineVersion"] and reported["lastSeen"]
    assert reported["pollSeconds"] == 1.0
    # One tag for the edge (each earlier record's manifest was deleted), naming the record.
    tags = client.tags(fleet.status_repository("edge", "upd"))
    assert [t.split(".")[0] for t in tags] == [EDGE], tags
    (record,) = fleet.list_status_tags(client, "edge", "upd").values()
    assert record.state == "Current" and record.edge == EDGE
    assert reported["running"]["digest"].removeprefix("sha256:").startswith(record.running12)


FINITE = [{"name": "finite", "expr": "all(isfinite(y))"}]


def test_a_version_that_breaks_after_the_swap_rolls_back_and_is_never_retried(
    own_registry, tmp_path
) -> None:
    key, pub = keypair(tmp_path)
    sign = ("--edge", EDGE, "--sign-key", str(key))
    v1 = push(own_registry, tmp_path, {**add(tmp_path, 1.0), "validations": FINITE}, *sign)
    env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", pub)
    # sqrt(1 - x): finite on the smoke test's sample (0.5), NaN on these rows (x up to 3).
    nan = m.sqrt_of_difference(tmp_path / "sqrt.onnx", 1.0)
    broken = {
        "name": "upd",
        "steps": [{"model": {"name": "add", "path": str(nan)}}],
        "validations": FINITE,
    }
    with engine(env, tmp_path / "e.log") as e, Load(e.url, "upd") as load:
        time.sleep(1)
        push(own_registry, tmp_path, broken, *sign)  # its pointer moves last
        # Within the probation (1.5 s) + 10 s of the pointer's move, poll included.
        st = wait_status(e.url, "RolledBack", v1["pipelineVersion"], timeout=1.5 + 10)
        assert "error rate" in st["reason"], st
        time.sleep(4)  # four more polls: the bad digest is not tried again
        assert status(e.url)["state"] == "RolledBack"
        assert metric(e, 'edgepipe_update_total{result="rolled-back"}') == 1
        assert metric(e, 'edgepipe_update_total{result="applied"}') == 0
        assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0
    assert not load.failures, load.failures[:3]
    assert load.checks > 0  # it did answer NaN for a while, and was caught by its validation
    assert load.versions[-1] == load.versions[0]
    # Restarted online, the engine starts on what the pointer names, which this device
    # marked bad: it goes back to the last good version at once.
    with engine(env, tmp_path / "restart.log") as e:
        st = wait_status(e.url, "RolledBack", v1["pipelineVersion"], timeout=10)
        assert "marked bad" in st["reason"]
        assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0


def test_refused_before_the_swap(own_registry, tmp_path) -> None:
    key, pub = keypair(tmp_path)
    sign = ("--edge", EDGE, "--sign-key", str(key))
    v1 = push(own_registry, tmp_path, add(tmp_path, 1.0), *sign)
    env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", pub)
    fails = m.fails_at_run(tmp_path / "fails.onnx")
    one_input = m.add_constant(tmp_path / "one.onnx", 5.0)
    cases = [
        # Loads, but raises on the smoke test's sample.
        ({"name": "upd", "steps": [{"model": {"name": "f", "path": str(fails)}}]}, sign, "smoke"),
        # Does not load: two tensor fields for a model with one input.
        (
            {
                "name": "upd",
                "steps": [
                    {"model": {"name": "a", "path": str(one_input)}, "tensorFields": ["x", "z"]}
                ],
            },
            sign,
            "does not load",
        ),
        # Unsigned, with OCI_VERIFY_KEY set.
        (add(tmp_path, 7.0), ("--edge", EDGE), "is not signed"),
    ]
    with engine(env, tmp_path / "e.log") as e, Load(e.url, "upd", rate=5) as load:
        for config, flags, why in cases:
            pushed = push(own_registry, tmp_path, config, *flags)
            st = wait_status(e.url, "Rejected", timeout=20, reason=why)
            assert st["running"]["version"] == v1["pipelineVersion"]
            assert st["target"] != st["running"]["digest"]
            assert pushed["pipelineVersion"] != v1["pipelineVersion"]
            assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0
    assert not load.failures and set(load.versions) == {load.versions[0]}


def test_update_lock_holds_a_new_version_until_the_file_goes(own_registry, tmp_path) -> None:
    lock = tmp_path / "busy"
    lock.touch()
    v1 = push(own_registry, tmp_path, add(tmp_path, 1.0), "--edge", EDGE)
    env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", None, lock=lock)
    with engine(env, tmp_path / "e.log") as e:
        v2 = push(own_registry, tmp_path, add(tmp_path, 2.0), "--edge", EDGE)
        st = wait_status(e.url, "Waiting", timeout=15)
        assert str(lock) in st["reason"]
        time.sleep(2)
        assert status(e.url)["running"]["version"] == v1["pipelineVersion"]
        assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0
        lock.unlink()
        t = time.monotonic()
        wait_status(e.url, "Current", v2["pipelineVersion"], timeout=15)
        # Within one poll (1 s ±20%) of the removal, plus the probation (1.5 s).
        assert time.monotonic() - t < 1.2 + 1.5 + 2


def test_registry_down_during_poll_and_download_then_back(own_registry, tmp_path) -> None:
    v1 = push(own_registry, tmp_path, add(tmp_path, 1.0), "--edge", EDGE)
    with CountingProxy(own_registry.host) as proxy:
        env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", None)
        env["PIPELINE_URL"] = env["PIPELINE_URL"].replace(own_registry.host, proxy.host)
        env["OCI_REGISTRY"] = proxy.host
        with engine(env, tmp_path / "e.log") as e, Load(e.url, "upd", rate=5) as load:
            own_registry.stop()
            deadline = time.monotonic() + 15
            while (status(e.url)["lastPoll"] or {}).get("result") != "registry-down":
                assert time.monotonic() < deadline, status(e.url)
                time.sleep(0.2)
            assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0
            own_registry.start()
            config = add(tmp_path, 2.0, pad_bytes=10_000_000)
            # The new model's download (10 MB) breaks half-way, once.
            proxy.cut = oci.file_digest(Path(config["steps"][0]["model"]["path"]))[0]
            v2 = push(own_registry, tmp_path, config, "--edge", EDGE)
            wait_status(e.url, "Current", v2["pipelineVersion"], timeout=40)
        assert not load.failures, load.failures[:3]
        assert proxy.ranges, "the cut download resumed with a Range request"


def test_restarted_offline_mid_update_starts_on_the_last_good_version(
    own_registry, tmp_path
) -> None:
    key, pub = keypair(tmp_path)
    sign = ("--edge", EDGE, "--sign-key", str(key))
    v1 = push(own_registry, tmp_path, add(tmp_path, 1.0), *sign)
    env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", pub, probation_seconds=60)
    with engine(env, tmp_path / "e.log") as e:
        v2 = push(own_registry, tmp_path, add(tmp_path, 2.0), *sign)
        wait_status(e.url, "Probation", v2["pipelineVersion"], timeout=15)
        own_registry.stop()  # and the device loses power in the middle of its probation
    with engine(env, tmp_path / "offline.log") as e:
        assert "registry unreachable" in e.log()
        assert status(e.url)["running"]["version"] == v1["pipelineVersion"]
        assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0


def test_only_the_changed_model_is_downloaded(own_registry, tmp_path) -> None:
    first = m.add_constant(tmp_path / "first.onnx", 1.0)

    def two_models(factor: float) -> dict:
        second = m.scale(tmp_path / f"scale-{factor}.onnx", factor)
        return {
            "name": "upd",
            "steps": [
                {"model": {"name": "add", "path": str(first)}},
                {"model": {"name": "scale", "path": str(second)}},
            ],
        }

    v1 = push(own_registry, tmp_path, two_models(2.0), "--edge", EDGE)
    with CountingProxy(own_registry.host) as proxy:
        env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", None)
        env["PIPELINE_URL"] = env["PIPELINE_URL"].replace(own_registry.host, proxy.host)
        env["OCI_REGISTRY"] = proxy.host
        with engine(env, tmp_path / "e.log") as e:
            proxy.requests.clear()
            proxy.blob_bytes = 0
            time.sleep(2.5)  # polls with nothing new: one HEAD each, no blob
            at_rest = list(proxy.requests)
            v2 = push(own_registry, tmp_path, two_models(3.0), "--edge", EDGE)
            wait_status(e.url, "Current", v2["pipelineVersion"], timeout=20)
            assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 3.0
        pulled = [
            r.rsplit("/", 1)[1] for r in proxy.requests if r.startswith("GET") and "/blobs/" in r
        ]
    # At rest, the pipeline's repository sees one HEAD per poll and nothing else (the
    # status heartbeat and the log uploads go to their own repositories).
    polls = [r for r in at_rest if "/edge/pipelines/" in r]
    assert polls and all(r.startswith("HEAD") and "/manifests/edge-" in r for r in polls), polls
    changed = oci.file_digest(tmp_path / "scale-3.0.onnx")
    assert changed[0] in pulled
    assert oci.file_digest(first)[0] not in pulled
    config_bytes = proxy.blob_bytes - changed[1]
    assert 0 < config_bytes < 4096, (proxy.blob_bytes, changed)  # the config blob, no more


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_ten_swaps_back_and_forth_keep_memory_and_cache_flat(own_registry, tmp_path) -> None:
    a = push(own_registry, tmp_path, add(tmp_path, 1.0), "--edge", EDGE)
    b = push(own_registry, tmp_path, add(tmp_path, 2.0))
    cache = tmp_path / "cache"
    env = edge_env(own_registry, a, EDGE, cache, None, probation_seconds=0.5)
    # The inference log's first segment write (pyarrow's pools) would show as growth here.
    env["EDGEPIPE_ENGINE_LOG_INFERENCES"] = "false"
    client = oci.Client(
        own_registry.host, oci.Credentials(own_registry.username, own_registry.password),
        plain_http=True,
    )  # fmt: skip
    repo = oci.Reference.parse(a["pipelineUrl"]).repository
    digests = {
        v["pipelineVersion"]: client.get_manifest(oci.Reference.parse(v["pipelineUrl"]))[1]
        for v in (a, b)
    }
    rss = []
    with engine(env, tmp_path / "e.log") as e, Load(e.url, "upd", rate=10) as load:
        for i in range(10):
            version = (b, a)[i % 2]["pipelineVersion"]
            fleet.move_pointer(client, repo, digests[version], EDGE)
            wait_status(e.url, "Current", version, timeout=15)
            rss.append(_rss(e.proc.pid))
    assert not load.failures, load.failures[:3]
    assert len(load.changes()) == 11
    assert max(rss[2:]) <= rss[1] * 1.10, rss
    blobs = sorted(p.name for p in (cache / "blobs" / "sha256").iterdir())
    assert len(blobs) == 2 and not [n for n in blobs if n.startswith(".")], blobs
    assert len(list((cache / "pipelines").glob("*.json"))) <= 5


def test_the_pages_edge_follows_two_updates_and_rolls_one_back(tmp_path) -> None:
    """docs/how-to/edge-updates.md's blocks, word for word, every output line checked."""
    import os
    import shutil
    import signal
    import socket
    import subprocess

    from tests.helpers import walkthrough as wt
    from tests.helpers.paths import ROOT

    for tool in ("docker-registry", "htpasswd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup --dev)")
    for port in (5055, 8095):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken"
    cmds = wt.commands((ROOT / "docs" / "how-to" / "edge-updates.md").read_text())
    out_path = tmp_path / "stdout"
    with open(out_path, "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            ["bash", "-c", wt.script(cmds)], cwd=ROOT, stdout=out, stderr=err,
            start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
        try:
            proc.wait(timeout=180)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    problems = wt.mismatches(cmds, out_path.read_text())
    assert not problems, "\n".join(problems)


def test_a_full_disk_during_the_download_keeps_the_old_version(own_registry, tmp_path) -> None:
    """The engine may write no file above 4 MB (RLIMIT_FSIZE, inherited; Python ignores
    SIGXFSZ, so the write fails as a full disk's would): a 10 MB model cannot land."""
    import resource

    v1 = push(own_registry, tmp_path, add(tmp_path, 1.0), "--edge", EDGE)
    env = edge_env(own_registry, v1, EDGE, tmp_path / "cache", None)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, limits[1]))
    try:
        e = engine(env, tmp_path / "e.log").start()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    try:
        push(own_registry, tmp_path, add(tmp_path, 2.0, pad_bytes=10_000_000), "--edge", EDGE)
        st = wait_status(e.url, "Downloading", timeout=15, reason="the disk is full")
        assert st["running"]["version"] == v1["pipelineVersion"]
        assert answer(e.url, "upd")["outputs"][0]["Float"]["data"][0] == 1.0
        assert metric(e, 'edgepipe_update_total{result="disk-full"}') >= 1
        blobs = list((tmp_path / "cache" / "blobs" / "sha256").iterdir())
        assert not [b for b in blobs if b.name.startswith(".")], blobs  # no partial file left
    finally:
        e.stop()

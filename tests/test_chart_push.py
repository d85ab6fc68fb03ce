"""Charts packaged and pushed in Python, with Helm's media types; the real helm reads them."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from edgepipe import oci
from edgepipe.localengine import free_port
from edgepipe.publish.chart import package_chart, push_chart
from tests.helpers.helm import HELM

VERSION = "0.0.1-abc123+build.7"


def make_chart(base: Path, name: str = "edge-demo", greeting: str = "hello") -> Path:
    chart = base / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v2", "name": name, "version": VERSION, "description": "a test chart"}
        )
    )
    (chart / "values.yaml").write_text(f"# -- what the ConfigMap says\ngreeting: {greeting}\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    return chart


def test_the_same_files_give_the_same_bytes(tmp_path: Path) -> None:
    a = make_chart(tmp_path / "a")
    b = make_chart(tmp_path / "b")
    # Other times and permissions on the second copy change nothing.
    for path in b.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    (b / "values.yaml").chmod(0o600)
    first = package_chart(a)
    assert first == package_chart(b) == package_chart(a)
    raw = gzip.decompress(first)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
    # As helm package lays it out: Chart.yaml first, every path under the chart's name.
    assert names == [
        "edge-demo/Chart.yaml",
        "edge-demo/templates/configmap.yaml",
        "edge-demo/values.yaml",
    ]
    # gzip's header carries no time and no file name.
    assert first[4:8] == b"\0\0\0\0" and not first[3] & 0x08
    # A changed file changes the digest.
    assert package_chart(make_chart(tmp_path / "c", greeting="bye")) != first


def helm(*args: str, env_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": f"{env_dir}/cache",
        "HELM_CONFIG_HOME": f"{env_dir}/config",
        "HELM_DATA_HOME": f"{env_dir}/data",
    }
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {proc.stderr}")
    return proc


def test_helm_pulls_shows_and_templates_what_was_pushed(auth_registry, tmp_path: Path) -> None:
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    target = oci.Target.parse(f"{auth_registry.host}/charts-test", creds)
    url, ref = push_chart(make_chart(tmp_path / "one"), target)
    assert url == f"{auth_registry.host}/charts-test/charts/edge-demo"
    # The same chart again: the same digest, nothing new in the registry.
    assert push_chart(make_chart(tmp_path / "two"), target) == (url, ref)
    manifest, digest = target.client().get_manifest(oci.Reference.parse(ref))
    assert ref.endswith(digest)
    assert manifest["config"]["mediaType"] == oci.HELM_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.HELM_CHART_LAYER]

    login = ["--plain-http", "--username", creds.username, "--password", creds.password]
    values = helm("show", "values", f"oci://{url}", "--version", VERSION, *login, env_dir=tmp_path)
    assert "greeting: hello" in values.stdout
    chart = helm("show", "chart", f"oci://{url}", "--version", VERSION, *login, env_dir=tmp_path)
    assert yaml.safe_load(chart.stdout)["version"] == VERSION
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm("pull", f"oci://{url}", "--version", VERSION, "-d", str(pulled), *login, env_dir=tmp_path)
    (tgz,) = pulled.glob("*.tgz")
    assert tgz.read_bytes() == package_chart(make_chart(tmp_path / "three"))
    rendered = helm(
        "template", "rel", f"oci://{url}", "--version", VERSION, "--set", "greeting=hi", *login,
        env_dir=tmp_path,
    ).stdout  # fmt: skip
    assert yaml.safe_load(rendered)["data"] == {"greeting": "hi"}


def test_registry_failures_are_classified_by_status(auth_registry, tmp_path: Path) -> None:
    chart = make_chart(tmp_path)
    wrong = oci.Target.parse(
        f"{auth_registry.host}/charts-test", oci.Credentials(auth_registry.username, "nope")
    )
    with pytest.raises(oci.AuthError, match="refused the credentials"):
        push_chart(chart, wrong)
    nobody = oci.Target.parse(f"127.0.0.1:{free_port()}/x", oci.Credentials("u", "p"))
    with pytest.raises(oci.RegistryUnavailable, match="cannot reach registry"):
        push_chart(chart, nobody)

"""Model references that hold no usable ONNX file (issue 30): each refused in one line that
names the reference, by the engine's fetch and the operator's/CLI's resolution alike, and
nothing is written outside the engine's cache (tar entries and links that leave the tree,
layers over EDGEPIPE_ENGINE_MAX_MODEL_BYTES)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgepipe import oci
from edgepipe.engine.edge import fetch_model
from edgepipe.engine.settings import Settings
from tests.helpers.modeltools import link, push_artifact, push_image, tar_layer

ONNX = b"\x08\x08" + b"not-really-onnx" * 4  # never loaded: refused before


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.fixture
def client(auth_registry) -> oci.Client:
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    return oci.Client(auth_registry.host, creds, plain_http=True)


def refusals(
    url: str, reg, tmp_path: Path, max_bytes: int = 2**30, resolver: bool = True
) -> list[str]:
    """The engine's message and (unless ``resolver`` is False) the operator's/CLI's;
    checks each names ``url`` in one line and that nothing was written outside the cache."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "cache"
    settings = Settings(
        cache_dir=cache,
        oci_username=reg.username,
        oci_password=reg.password,
        max_model_bytes=max_bytes,
    )
    before = files_under(tmp_path)
    with pytest.raises(oci.OciError) as engine:
        fetch_model(url, settings)
    messages = [str(engine.value)]
    if resolver:
        creds = oci.Credentials(reg.username, reg.password)
        with pytest.raises(oci.OciError) as resolved:
            oci.model_info(url, creds, max_bytes=max_bytes)
        messages.append(str(resolved.value))
    outside = {p for p in files_under(tmp_path) - before if p != cache and cache not in p.parents}
    assert outside == set(), outside
    leftovers = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert leftovers == [], leftovers  # the layers read are gone too
    for message in messages:
        assert "\n" not in message and url.removeprefix("oci://") in message, message
    return messages


def test_an_artifact_with_no_onnx_weight(client, auth_registry, tmp_path) -> None:
    url = push_artifact(
        client,
        "bad/safetensors",
        [(oci.modelpack.WEIGHT_RAW, b"weights", "model.safetensors")],
        "v1",
    )
    for message in refusals(url, auth_registry, tmp_path):
        assert "no ONNX weight" in message


def test_an_image_with_no_models_folder(client, auth_registry, tmp_path) -> None:
    url = push_image(client, "bad/nomodels", [tar_layer([("etc/hello.onnx", ONNX)])], "v1")
    for message in refusals(url, auth_registry, tmp_path):
        assert "the image has no /models" in message


def test_several_candidates_and_no_path(client, auth_registry, tmp_path) -> None:
    two = [
        (oci.modelpack.WEIGHT_RAW, ONNX, "a.onnx"),
        (oci.modelpack.WEIGHT_RAW, ONNX + b"b", "b.onnx"),
    ]
    url = push_artifact(client, "bad/two", two, "v1")
    for message in refusals(url, auth_registry, tmp_path):
        assert "several ONNX files (a.onnx, b.onnx); choose one with ?path=FILE" in message
    image = [tar_layer([("models/a.onnx", ONNX), ("models/b.onnx", ONNX)])]
    url = push_image(client, "bad/two-image", image, "v1")
    for message in refusals(url, auth_registry, tmp_path / "image"):
        assert "several ONNX files (models/a.onnx, models/b.onnx)" in message


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([("models/../../escape.onnx", ONNX)], "leaves the tree"),
        ([("../escape.onnx", ONNX), ("models/m.onnx", ONNX)], "leaves the tree"),
        ([link("models/m.onnx", "../../../escape.onnx")], "points out of the tree"),
        ([link("models/m.onnx", "../../escape.onnx", hard=True)], "points out of the tree"),
    ],
    ids=["dotdot-in-models", "dotdot-elsewhere", "symlink-out", "hardlink-out"],
)
def test_a_tar_leaving_the_tree_is_refused(
    client, auth_registry, tmp_path, entries, expected
) -> None:
    url = push_image(client, "bad/escape", [tar_layer(entries)], "v1")
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(work)  # a relative write would land here, inside tmp_path: it is checked
    try:
        for message in refusals(url, auth_registry, tmp_path):
            assert expected in message and "refusing the layer" in message
    finally:
        os.chdir(cwd)
    assert not list(tmp_path.rglob("escape.onnx"))


def test_a_link_inside_the_tree_is_followed(client, auth_registry, tmp_path) -> None:
    """Not every link is refused: one to a file inside the image serves that file."""
    layer = tar_layer([("data/real.onnx", ONNX), link("models/m.onnx", "/data/real.onnx")])
    url = push_image(client, "ok/link", [layer], "v1")
    info = oci.model_info(url, oci.Credentials(auth_registry.username, auth_registry.password))
    assert info.sha256 == hashlib.sha256(ONNX).hexdigest()


def test_a_layer_over_the_limit_is_refused(client, auth_registry, tmp_path) -> None:
    big = tar_layer([("models/m.onnx", ONNX * 100)])
    url = push_image(client, "bad/big", [big], "v1")
    for message in refusals(url, auth_registry, tmp_path, max_bytes=1000):
        assert "over the limit of 1000 (EDGEPIPE_ENGINE_MAX_MODEL_BYTES)" in message
    # A raw weight: the resolver reads only its manifest; the engine refuses to download.
    weights = [(oci.modelpack.WEIGHT_RAW, ONNX * 100, "m.onnx")]
    raw = push_artifact(client, "bad/big-raw", weights, "v1")
    (message,) = refusals(raw, auth_registry, tmp_path / "raw", max_bytes=1000, resolver=False)
    assert "over the limit of 1000" in message

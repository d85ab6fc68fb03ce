"""Where a model reference's ONNX file is, and getting it out.

Three forms are read: a ModelPack artifact (the weight layer whose
``org.cncf.model.filepath`` ends in ``.onnx``; raw, or a tar holding that file), a KServe
modelcar image (an ordinary image, single-arch or an index, the model under ``/models``),
and edgepipe's earlier artifacts (an ``application/vnd.edgepipe.model.onnx`` layer). When
there are several candidates the reference's ``?path=FILE`` chooses.
"""

from __future__ import annotations

import platform
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from . import modelpack, tars
from .client import Client
from .refs import MANIFEST, MODEL_LAYER, OciError, Reference

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_CONFIGS = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
ACCEPT = ", ".join([MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST])
# Big enough for any single ONNX file (protobuf stops at 2 GiB) in a compressed layer.
DEFAULT_MAX_MODEL_BYTES = 4 * 2**30
MODELS_DIR = "models"


class ModelNotFound(OciError):
    """The reference holds no ONNX model, or several and no ``?path=`` to choose."""


@dataclass(frozen=True)
class Located:
    """What holds the ONNX file: one raw layer (``member`` None), one tar layer and the
    file in it, or an image's layers (its ``/models`` still to be read)."""

    ref: Reference
    kind: Literal["raw", "tar", "image"]
    layers: tuple[dict[str, Any], ...]
    member: str | None = None

    @property
    def digest(self) -> str | None:
        """The file's own digest, when a raw layer is the file."""
        return self.layers[0]["digest"] if self.kind == "raw" else None


def locate(client: Client, ref: Reference) -> Located:
    """Read the reference's manifest (through an index to this machine's platform) and
    say where the ONNX file is; ModelNotFound, one line naming the reference, if nowhere."""
    manifest, _ = client.get_manifest(ref, ACCEPT)
    if manifest.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        entry = _platform_entry(manifest.get("manifests") or [], ref)
        manifest, _ = client.get_manifest(replace(ref, tag=None, digest=entry["digest"]), ACCEPT)
    layers = manifest.get("layers") or []
    if (manifest.get("config") or {}).get("mediaType") in IMAGE_CONFIGS:
        return Located(ref, "image", tuple(layers))
    weights = [x for x in layers if x.get("mediaType") in (*modelpack.WEIGHTS, MODEL_LAYER)]
    onnx = {
        modelpack.filepath(x) or x["digest"]: x
        for x in weights
        if x.get("mediaType") == MODEL_LAYER
        or (modelpack.filepath(x) or "").lower().endswith(".onnx")
    }
    if not onnx:
        kind = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
        raise ModelNotFound(
            f"{ref}: no ONNX weight ({kind}, {len(weights)} weight layer(s)): expected a "
            f"ModelPack weight layer whose {modelpack.FILEPATH} ends in .onnx, or an image "
            "with the model under /models"
        )
    name, layer = choose(onnx, ref, lambda p: p)
    if layer.get("mediaType") in (modelpack.WEIGHT_RAW, MODEL_LAYER):
        return Located(ref, "raw", (layer,))
    return Located(ref, "tar", (layer,), tars.inside(name, str(ref)))


def _platform_entry(entries: list[dict[str, Any]], ref: Reference) -> dict[str, Any]:
    """This machine's image in an index (else the first one for an OS at all)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    images = [e for e in entries if (e.get("platform") or {}).get("os") not in (None, "unknown")]
    for entry in images:
        if entry["platform"].get("architecture") == arch:
            return entry
    if images or entries:
        return (images or entries)[0]
    raise ModelNotFound(f"{ref}: an empty image index")


def choose(candidates: dict[str, Any], ref: Reference, norm: Any) -> tuple[str, Any]:
    """The one candidate, or the one ``?path=`` names; ModelNotFound otherwise."""
    if ref.path:
        want = norm(tars.inside(ref.path, str(ref)))
        for name, found in candidates.items():
            if norm(tars.inside(name, str(ref))) == want:
                return name, found
        raise ModelNotFound(
            f"{ref}: no ONNX file {ref.path!r}; it holds {', '.join(sorted(candidates))}"
        )
    if len(candidates) == 1:
        return next(iter(candidates.items()))
    names = sorted(candidates)
    raise ModelNotFound(
        f"{ref}: several ONNX files ({', '.join(names)}); choose one with ?path=FILE, "
        f"e.g. oci://{ref}?path={names[0]}"
    )


def check_size(found: Located, max_bytes: int) -> None:
    """TooLarge when a layer to download is over ``max_bytes``."""
    for layer in found.layers:
        if int(layer.get("size") or 0) > max_bytes:
            raise tars.TooLarge(
                f"{found.ref}: layer {layer['digest']} is {layer['size']} bytes, over the "
                f"limit of {max_bytes} (EDGEPIPE_ENGINE_MAX_MODEL_BYTES)"
            )


def extract(client: Client, found: Located, work: Path, max_bytes: int) -> tuple[Path, str]:
    """Download the layers into ``work`` and copy the ONNX file out there; (its path,
    its sha256 hex). Nothing is written anywhere else."""
    check_size(found, max_bytes)
    what = str(found.ref)
    work.mkdir(parents=True, exist_ok=True)
    paths = [
        client.pull_blob(found.ref.repository, x["digest"], work / f"layer{i}", max_bytes=max_bytes)
        for i, x in enumerate(found.layers)
    ]
    if found.kind == "raw":
        return paths[0], found.layers[0]["digest"].removeprefix("sha256:")
    tree: dict[str, tars.Entry] = {}
    for i, path in enumerate(paths):
        tars.merge(tree, tars.entries(path, i, what))
    pick = _tar_member if found.kind == "tar" else _models_member
    member = pick(tree, found)
    member, entry = tars.resolve(tree, member, what)
    return tars.copy_out(paths[entry.layer], member, work / "model.onnx", max_bytes, what)


def _tar_member(tree: dict[str, tars.Entry], found: Located) -> str:
    """A ModelPack tar weight: the file its annotation names, else its one .onnx file."""
    if found.member in tree:
        return found.member
    onnx = [n for n in tree if n.lower().endswith(".onnx")]
    if len(onnx) != 1:
        raise ModelNotFound(f"{found.ref}: its weight tar holds no {found.member}")
    return onnx[0]


def _models_member(tree: dict[str, tars.Entry], found: Located) -> str:
    """A modelcar: the .onnx file under /models (``?path=`` choosing among several)."""
    under = [n for n in tree if n == MODELS_DIR or n.startswith(MODELS_DIR + "/")]
    if not under:
        raise ModelNotFound(
            f"{found.ref}: the image has no /models (a KServe modelcar keeps its model there)"
        )
    onnx = {n: n for n in under if n.lower().endswith(".onnx")}
    if not onnx:
        files = ", ".join(sorted("/" + n for n in under if n != MODELS_DIR)) or "nothing"
        raise ModelNotFound(f"{found.ref}: no ONNX file under /models (it holds {files})")

    def in_models(name: str) -> str:
        return name if name.startswith(MODELS_DIR + "/") else posixpath.join(MODELS_DIR, name)

    return choose(onnx, found.ref, in_models)[0]

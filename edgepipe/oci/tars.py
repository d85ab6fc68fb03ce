"""Tar layers read without extracting them: every entry checked to stay inside the tree,
and one file copied out (hashed, size-capped) into a folder the caller chose."""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .refs import CHUNK, OciError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LINK_HOPS = 8


class UnsafeArchive(OciError):
    """A tar entry whose path, or link target, leaves the tree: the layer is refused."""


class TooLarge(OciError):
    """A layer or a file over the model size limit."""


@dataclass(frozen=True)
class Entry:
    """One tar entry: which layer (by index) it came from and its header."""

    layer: int
    info: tarfile.TarInfo


def inside(name: str, what: str) -> str:
    """``name`` as a path relative to the tree's root (``/models/a`` -> ``models/a``);
    UnsafeArchive when it climbs out with ``..``."""
    rel = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if rel == ".." or rel.startswith("../"):
        raise UnsafeArchive(f"{what}: the entry {name!r} leaves the tree; refusing the layer")
    return rel


def _link_target(entry_name: str, info: tarfile.TarInfo, what: str) -> str:
    """Where a link entry points, relative to the root; UnsafeArchive when out of the tree."""
    target = info.linkname
    if info.issym() and not target.startswith("/"):
        target = posixpath.join(posixpath.dirname(entry_name), target)
    rel = posixpath.normpath(target.lstrip("/")) if target.strip("/") else "."
    if rel == ".." or rel.startswith("../"):
        raise UnsafeArchive(
            f"{what}: the link {entry_name!r} -> {info.linkname!r} points out of the tree; "
            "refusing the layer"
        )
    return rel


def open_layer(path: Path, what: str) -> tarfile.TarFile:
    """A tar layer, plain or gzip'd (zstd is not in Python's standard library)."""
    with open(path, "rb") as f:
        if f.read(4) == ZSTD_MAGIC:
            raise OciError(f"{what}: zstd-compressed layers are not supported; push it gzip'd")
    try:
        return tarfile.open(path, "r:*")
    except tarfile.TarError as exc:
        raise OciError(f"{what}: a layer is not a tar archive ({exc})") from None


def entries(path: Path, layer: int, what: str) -> Iterator[tuple[str, Entry]]:
    """Every entry of one layer as (path from the root, Entry), each one checked."""
    with open_layer(path, what) as tar:
        try:
            for info in tar:
                name = inside(info.name, what)
                if info.issym() or info.islnk():
                    _link_target(name, info, what)
                yield name, Entry(layer, info)
        except tarfile.TarError as exc:
            raise OciError(f"{what}: a layer is a broken tar archive ({exc})") from None


def merge(tree: dict[str, Entry], layer: Iterator[tuple[str, Entry]]) -> None:
    """Lay one image layer over ``tree``, its whiteouts (``.wh.NAME``, ``.wh..wh..opq``)
    removing what earlier layers put there."""
    for name, entry in layer:
        folder, base = posixpath.split(name)
        if base == ".wh..wh..opq":
            prefix = f"{folder}/" if folder else ""
            for old in [k for k in tree if k.startswith(prefix) and tree[k].layer < entry.layer]:
                del tree[old]
        elif base.startswith(".wh."):
            gone = posixpath.join(folder, base[4:])
            for old in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                del tree[old]
        else:
            tree[name] = entry


def resolve(tree: dict[str, Entry], name: str, what: str) -> tuple[str, Entry]:
    """Follow links (inside the tree) to a regular file."""
    for _ in range(LINK_HOPS):
        entry = tree.get(name)
        if entry is None:
            raise OciError(f"{what}: {name!r} is a link to nothing in the image")
        if entry.info.isreg():
            return name, entry
        if not (entry.info.issym() or entry.info.islnk()):
            raise OciError(f"{what}: {name!r} is not a regular file")
        name = _link_target(name, entry.info, what)
    raise OciError(f"{what}: {name!r}: too many links")


def copy_out(path: Path, member: str, dest: Path, max_bytes: int, what: str) -> tuple[Path, str]:
    """Copy one regular file of a tar layer to ``dest``; (dest, sha256 hex)."""
    with open_layer(path, what) as tar:
        for info in tar:
            if not info.isreg() or inside(info.name, what) != member:
                continue
            if info.size > max_bytes:
                raise TooLarge(
                    f"{what}: {member} is {info.size} bytes, over the limit of {max_bytes} "
                    "(EDGEPIPE_ENGINE_MAX_MODEL_BYTES)"
                )
            src = tar.extractfile(info)
            assert src is not None  # a regular file
            h = hashlib.sha256()
            with open(dest, "wb") as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
            return dest, h.hexdigest()
    raise OciError(f"{what}: {member} is not in its layer")

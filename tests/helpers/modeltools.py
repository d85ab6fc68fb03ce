"""Other tools' models for the interop tests: the real oras CLI (scripts/build-oras), the
model-spec Go module (through the Go module proxy), and KServe modelcar images (podman)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from edgepipe import oci
from tests.helpers.paths import ROOT
from tests.helpers.podman import podman

CACHE = Path(os.environ.get("EDGEPIPE_CACHE", Path.home() / ".cache" / "edgepipe"))


def build_oras() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-oras")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"scripts/build-oras failed: {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def go_module_dir(module: str, version: str, work: Path) -> Path:
    """The module's source as the Go module proxy serves it (cached like the control plane)."""
    if shutil.which("go") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the Go toolchain is missing (scripts/build-cosign needs it too)")
        pytest.skip("the Go toolchain is not installed")
    env = {
        **os.environ,
        "GOMODCACHE": str(CACHE / "gomod"),
        "GOCACHE": str(CACHE / "gobuild"),
        "GOFLAGS": "-mod=mod",
    }
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "mod", "init", "drift"], cwd=work, env=env, capture_output=True)
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        pytest.fail(f"go mod download {module}@{version}: {out.stdout[-800:]}{out.stderr[-800:]}")
    return Path(json.loads(out.stdout)["Dir"])


def docker_config(reg, folder: Path) -> Path:
    """A docker config with the registry's login: how oras and podman log in."""
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    return path


def oras_run(oras: Path, reg, folder: Path, *args: str, cwd: Path | None = None) -> str:
    config = docker_config(reg, folder / "docker")
    out = subprocess.run(
        [str(oras), *args, "--plain-http", "--registry-config", str(config)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert out.returncode == 0, f"oras {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def modelpack_config(name: str, digest: str) -> bytes:
    return json.dumps(
        {
            "descriptor": {"name": name, "version": "1"},
            "config": {"format": "onnx"},
            "modelfs": {"type": "layers", "diffIds": [digest]},
        }
    ).encode()


def build_modelcar(tag: str, files: dict[str, Path], folder: Path) -> None:
    """``FROM scratch`` with the files copied under /models, as KServe's modelcar docs do."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["FROM scratch"]
    for name, src in files.items():
        shutil.copy(src, folder / name)
        lines.append(f"COPY {name} /models/{name}")
    (folder / "Containerfile").write_text("\n".join(lines) + "\n")
    podman("build", "-t", tag, "-f", str(folder / "Containerfile"), str(folder), timeout=300)


def push_modelcar(tag: str, reg, folder: Path) -> None:
    config = docker_config(reg, folder / "docker")
    podman("push", "--tls-verify=false", "--authfile", str(config), tag, timeout=300)


# -- hand-made layers, for the inputs no tool writes ----------------------------------------


def tar_layer(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of (name, data) files and raw headers (links, odd names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def push_image(client: oci.Client, repository: str, layers: list[bytes], tag: str) -> str:
    """An image manifest (OCI image config) with these uncompressed tar layers."""
    descs = [
        client.push_bytes(repository, data, "application/vnd.oci.image.layer.v1.tar")
        for data in layers
    ]
    diff_ids = [d["digest"] for d in descs]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "config": client.push_bytes(repository, config, "application/vnd.oci.image.config.v1+json"),
        "layers": descs,
    }
    client.put_manifest(repository, manifest, tag=tag)
    return f"oci://{client.registry}/{repository}:{tag}"


def push_artifact(
    client: oci.Client, repository: str, layers: list[tuple[str, bytes, str]], tag: str
) -> str:
    """A ModelPack artifact with these (media type, data, filepath) layers."""
    descs = []
    for media_type, data, filepath in layers:
        desc = client.push_bytes(repository, data, media_type)
        desc["annotations"] = {oci.modelpack.FILEPATH: filepath}
        descs.append(desc)
    digests = ["sha256:" + hashlib.sha256(data).hexdigest() for _, data, _ in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": oci.modelpack.ARTIFACT_TYPE,
        "config": client.push_bytes(
            repository, modelpack_config("m", digests[0]), oci.modelpack.CONFIG
        ),
        "layers": descs,
    }
    client.put_manifest(repository, manifest, tag=tag)
    return f"oci://{client.registry}/{repository}:{tag}"


def push_modelcar_index(image: str, dest: str, reg, folder: Path) -> None:
    """The image as the one entry of an image index (a manifest list), as multi-arch
    modelcars are pushed."""
    config = docker_config(reg, folder / "docker")
    index = f"localhost/edgepipe-test-index-{hashlib.sha256(dest.encode()).hexdigest()[:12]}"
    podman("manifest", "rm", index, check=False)
    podman("manifest", "create", index)
    podman("manifest", "add", index, f"containers-storage:{image}")
    podman(
        "manifest", "push", "--all", "--tls-verify=false", "--authfile", str(config),
        index, f"docker://{dest}", timeout=300,
    )  # fmt: skip


def as_earlier_edgepipe(client: oci.Client, url: str) -> None:
    """Rewrite a published pipeline as edgepipe wrote it before ModelPack: its model layers
    in ``application/vnd.edgepipe.model.onnx``, no filepath annotation; same tag."""
    ref = oci.Reference.parse(url)
    manifest, _ = client.get_manifest(ref)
    for layer in manifest["layers"]:
        layer["mediaType"] = oci.MODEL_LAYER
        layer["annotations"].pop(oci.modelpack.FILEPATH, None)
    client.put_manifest(ref.repository, manifest, tag=ref.tag)

"""Signed publishes: edgepipe signs in cosign's format, the edge engine verifies before it
loads anything (offline too, from its cache), and the real cosign CLI reads both ways."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgepipe import oci
from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.localengine import EngineProcess
from edgepipe.oci import signing
from tests.helpers import onnx_models as m
from tests.helpers.cli import cli
from tests.helpers.publishing import creds_env, edge_env

ROOT = Path(__file__).resolve().parent.parent
X = [{"x": np.arange(4, dtype=np.float32).reshape(1, 4)}]


def keypair(folder: Path, name: str) -> tuple[Path, Path]:
    signer = signing.Signer.generate()
    key, pub = folder / f"{name}.key", folder / f"{name}.pub"
    key.write_text(signer.private_pem())
    pub.write_text(signer.public_pem())
    return key, pub


def push(reg, tmp_path: Path, *extra: str, name: str = "signed", value: float = 1.0) -> dict:
    model = m.add_constant(tmp_path / f"{name}-{value}.onnx", value)
    config = tmp_path / f"{name}-{value}.yaml"
    config.write_text(
        json.dumps({"name": name, "steps": [{"model": {"name": "add", "path": str(model)}}]})
    )
    out = cli(
        "publish", "push", str(config), "--registry", f"{reg.host}/edge", "-o", "json", *extra,
        env=creds_env(reg),
    )  # fmt: skip
    return json.loads(out.stdout)


def serve(reg, status: dict, cache: Path, log: Path, key: Path | str | None) -> np.ndarray:
    env = edge_env({"status": status}, reg, cache)
    if key is not None:
        env["OCI_VERIFY_KEY"] = str(key)
    with EngineProcess(env=env, log_path=log, timeout=90) as engine:
        (rec,) = EngineClient(engine.url).infer_records(
            status["pipelineUrl"].split("/")[-1].split(":")[0], X
        )
        return outputs_of(rec)[0]


def refused(reg, status: dict, cache: Path, log: Path, key: Path) -> str:
    with pytest.raises(RuntimeError, match="engine exited") as info:
        serve(reg, status, cache, log, key)
    return str(info.value)


def client(reg) -> oci.Client:
    return oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)


def retag_with_flipped_config(reg, url: str) -> None:
    """What a registry-side attacker does: the same tag, a config with one byte changed."""
    ref = oci.Reference.parse(url)
    c = client(reg)
    manifest, _ = c.get_manifest(ref)
    config = bytearray(c.get_blob(ref.repository, manifest["config"]["digest"]))
    i = config.index(b'"add"') + 2
    config[i] ^= 0x01  # "add" -> "aed"
    manifest["config"] = c.push_bytes(ref.repository, bytes(config), oci.PIPELINE_CONFIG)
    c.put_manifest(ref.repository, manifest, tag=ref.tag)


def test_keys_that_cannot_sign_are_named() -> None:
    with pytest.raises(signing.KeyProblem, match="cosign's own encrypted key format"):
        signing.Signer.load(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n")
    with pytest.raises(signing.KeyProblem, match="not PEM text and not a readable file"):
        signing.Signer.load("/nonexistent/key.pem")
    with pytest.raises(signing.KeyProblem, match="not a PEM public key"):
        signing.load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(signing.KeyProblem, match="P-256"):
        signing.Signer.load(p384)


def test_signed_publish_is_verified_at_the_edge_online_and_offline(own_registry, tmp_path) -> None:
    key, pub = keypair(tmp_path, "edge")
    _, other_pub = keypair(tmp_path, "other")
    status = push(own_registry, tmp_path, "--sign-key", str(key))
    assert set(status["signatures"]) == {"pipeline", "chart"}
    assert status["publicKey"] == pub.read_text()
    assert "-e OCI_VERIFY_KEY \\" in status["dockerRunCommand"]
    # The signature is where cosign puts it, and its payload names the manifest's digest.
    ref = oci.Reference.parse(status["pipelineUrl"])
    _, digest = client(own_registry).get_manifest(ref)
    assert status["signatures"]["pipeline"].endswith(f":{digest.replace(':', '-')}.sig")
    sigs = signing.fetch_signatures(client(own_registry), ref.repository, digest)
    (payload,) = sigs.payloads.values()
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest

    # Publishing the same again with the same key adds no second signature.
    assert (
        push(own_registry, tmp_path, "--sign-key", str(key))["signatures"] == status["signatures"]
    )
    again = signing.fetch_signatures(client(own_registry), ref.repository, digest)
    assert again.manifest == sigs.manifest

    cache = tmp_path / "cache"
    np.testing.assert_array_equal(
        serve(own_registry, status, cache, tmp_path / "a.log", pub), X[0]["x"] + 1
    )
    assert "signature verified" in (tmp_path / "a.log").read_text()
    # PEM text works as well as a file.
    np.testing.assert_array_equal(
        serve(own_registry, status, tmp_path / "c2", tmp_path / "b.log", pub.read_text()),
        X[0]["x"] + 1,
    )
    # Another key: refused, and nothing is cached or served.
    message = refused(own_registry, status, tmp_path / "c3", tmp_path / "c.log", other_pub)
    assert "no valid signature" in message and "does not verify with this key" in message
    assert not (tmp_path / "c3" / "blobs").exists()

    own_registry.stop()
    # Offline: the signature was cached with the artifact and is checked again.
    np.testing.assert_array_equal(
        serve(own_registry, status, cache, tmp_path / "d.log", pub), X[0]["x"] + 1
    )
    assert "registry unreachable" in (tmp_path / "d.log").read_text()
    assert "does not verify" in refused(own_registry, status, cache, tmp_path / "e.log", other_pub)
    # A cache tampered with on disk (the config changed) is refused too.
    (index,) = (cache / "pipelines").glob("*.json")
    saved = json.loads(index.read_text())
    saved["config"] = saved["config"].replace('"add"', '"aed"')
    index.write_text(json.dumps(saved))
    assert "cached config does not match" in refused(
        own_registry, status, cache, tmp_path / "f.log", pub
    )
    own_registry.start()


def test_a_signed_chart_carries_the_public_key(tmp_path) -> None:
    import yaml

    from edgepipe.config import PipelineConfig
    from edgepipe.publish import render_chart
    from edgepipe.resources import DeploymentConfig
    from tests.helpers.helm import helm

    signer = signing.Signer.generate()
    config = PipelineConfig.model_validate(
        {"name": "c", "steps": [{"model": {"name": "m", "path": "m.onnx", "sha256": "0" * 64}}]}
    ).with_version()
    chart = render_chart(
        tmp_path, chart_name="c", config=config, pipeline_url="r:5000/p/pipelines/c:v",
        target=oci.Target.parse("r:5000/p"), engine_image="edgepipe-engine:0.1.0",
        deployment=DeploymentConfig(), public_key=signer.public_pem(),
    )  # fmt: skip
    assert yaml.safe_load((chart / "values.yaml").read_text())["verifyKey"] == signer.public_pem()
    out = helm("template", "e", str(chart), "--set", "ociRegistry.registry=r",
                "--set", "ociRegistry.username=u", "--set", "ociRegistry.password=p")  # fmt: skip
    dep = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment")
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["OCI_VERIFY_KEY"] == signer.public_pem()


def test_unsigned_and_tampered_pipelines_are_refused(own_registry, tmp_path) -> None:
    key, pub = keypair(tmp_path, "edge")
    unsigned = push(own_registry, tmp_path, name="plain")
    assert unsigned["signatures"] is None
    message = refused(own_registry, unsigned, tmp_path / "c1", tmp_path / "a.log", pub)
    assert "is not signed" in message and "serving nothing" in message

    signed = push(own_registry, tmp_path, "--sign-key", str(key))
    retag_with_flipped_config(own_registry, signed["pipelineUrl"])
    assert "is not signed" in refused(
        own_registry, signed, tmp_path / "c2", tmp_path / "b.log", pub
    )
    # A byte flipped in the config blob as the registry stores it (same digest, other bytes).
    third = push(own_registry, tmp_path, "--sign-key", str(key), name="third")
    ref = oci.Reference.parse(third["pipelineUrl"])
    manifest, _ = client(own_registry).get_manifest(ref)
    hexd = manifest["config"]["digest"].removeprefix("sha256:")
    stored = own_registry.base / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    data = bytearray(stored.read_bytes())
    data[data.index(b'"add"') + 2] ^= 0x01
    stored.write_bytes(bytes(data))
    message = refused(own_registry, third, tmp_path / "c4", tmp_path / "d.log", pub)
    assert "digest" in message and not (tmp_path / "c4" / "blobs").exists()
    # Without a verification key the same engine would have served it: the check is what refuses.
    np.testing.assert_array_equal(
        serve(own_registry, signed, tmp_path / "c3", tmp_path / "c.log", None), X[0]["x"] + 1
    )


def test_a_signature_copied_onto_another_artifact_is_refused(own_registry, tmp_path) -> None:
    key, pub = keypair(tmp_path, "edge")
    a = push(own_registry, tmp_path, "--sign-key", str(key), name="first")
    b = push(own_registry, tmp_path, name="second")
    c = client(own_registry)
    ra, rb = oci.Reference.parse(a["pipelineUrl"]), oci.Reference.parse(b["pipelineUrl"])
    _, da = c.get_manifest(ra)
    _, db = c.get_manifest(rb)
    sigs = signing.fetch_signatures(c, ra.repository, da)
    manifest = json.loads(sigs.manifest)
    for layer in manifest["layers"]:
        c.push_bytes(rb.repository, sigs.payloads[layer["digest"]], signing.SIMPLE_SIGNING)
    manifest["config"] = c.push_bytes(rb.repository, b"{}", signing.IMAGE_CONFIG)
    c.put_manifest(rb.repository, manifest, tag=signing.signature_tag(db))
    message = refused(own_registry, b, tmp_path / "c", tmp_path / "a.log", pub)
    assert f"is for {da}, not {db}" in message


# -- the real cosign ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cosign() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-cosign")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"scripts/build-cosign failed: {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def cosign_env(reg, folder: Path) -> dict[str, str]:
    """cosign logs in from a docker config, as every registry client does."""
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (folder / "docker").mkdir(exist_ok=True)
    (folder / "docker" / "config.json").write_text(
        json.dumps({"auths": {reg.host: {"auth": auth}}})
    )
    return {
        **os.environ,
        "DOCKER_CONFIG": str(folder / "docker"),
        "COSIGN_PASSWORD": "cosign-test",
        "HOME": str(folder),  # cosign's TUF cache and the like stay in the test's folder
    }


def run_cosign(cosign: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(cosign), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def cosign_verify(cosign: Path, env: dict, key: Path, image: str) -> subprocess.CompletedProcess:
    """``cosign verify --key`` without a transparency log (none is reachable here)."""
    return run_cosign(
        cosign,
        env,
        "verify",
        "--key",
        str(key),
        "--insecure-ignore-tlog",
        "--allow-http-registry",
        image,
    )


def cosign_sign(cosign: Path, env: dict, key: Path, image: str) -> None:
    """``cosign sign --key`` without uploading to a transparency log."""
    signed = run_cosign(
        cosign,
        env,
        "sign",
        "--key",
        str(key),
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
        image,
    )
    assert signed.returncode == 0, signed.stderr


def by_digest(reg, url: str) -> str:
    ref = oci.Reference.parse(url)
    _, digest = client(reg).get_manifest(ref)
    return f"{reg.host}/{ref.repository}@{digest}"


def test_cosign_verifies_what_edgepipe_signed(cosign, own_registry, tmp_path) -> None:
    key, pub = keypair(tmp_path, "edge")
    _, other_pub = keypair(tmp_path, "other")
    status = push(own_registry, tmp_path, "--sign-key", str(key))
    env = cosign_env(own_registry, tmp_path)
    chart = status["helmChartReference"]
    for image in (by_digest(own_registry, status["pipelineUrl"]), chart):
        ok = cosign_verify(cosign, env, pub, image)
        assert ok.returncode == 0, ok.stderr
        (claim,) = json.loads(ok.stdout)
        assert claim["critical"]["image"]["docker-manifest-digest"] == image.split("@")[1]
        bad = cosign_verify(cosign, env, other_pub, image)
        assert bad.returncode != 0
    # A flipped config byte makes a new manifest that cosign, too, finds unsigned.
    retag_with_flipped_config(own_registry, status["pipelineUrl"])
    tampered = by_digest(own_registry, status["pipelineUrl"])
    bad = cosign_verify(cosign, env, pub, tampered)
    assert bad.returncode != 0 and "no signatures found" in bad.stderr.lower(), bad.stderr


def test_the_engine_accepts_what_cosign_signed(cosign, own_registry, tmp_path) -> None:
    env = cosign_env(own_registry, tmp_path)
    gen = subprocess.run(
        [str(cosign), "generate-key-pair"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gen.returncode == 0, gen.stderr
    status = push(own_registry, tmp_path, name="bycosign")
    image = by_digest(own_registry, status["pipelineUrl"])
    cosign_sign(cosign, env, tmp_path / "cosign.key", image)
    np.testing.assert_array_equal(
        serve(own_registry, status, tmp_path / "c1", tmp_path / "a.log", tmp_path / "cosign.pub"),
        X[0]["x"] + 1,
    )
    # edgepipe adds its signature beside cosign's, and both verify.
    key, pub = keypair(tmp_path, "edge")
    ref = oci.Reference.parse(status["pipelineUrl"])
    signing.sign(
        client(own_registry), ref.repository, image.split("@")[1], signing.Signer.load(key)
    )
    for verifier in (pub, tmp_path / "cosign.pub"):
        ok = cosign_verify(cosign, env, verifier, image)
        assert ok.returncode == 0, ok.stderr
    # cosign's signature of another key is refused by the engine.
    _, other_pub = keypair(tmp_path, "other")
    assert "does not verify" in refused(
        own_registry, status, tmp_path / "c2", tmp_path / "b.log", other_pub
    )


def test_one_key_for_both_tools(cosign, own_registry, tmp_path) -> None:
    """edgepipe's PEM key, imported into cosign's format, signs with cosign; the engine
    verifies with the same public key."""
    env = cosign_env(own_registry, tmp_path)
    cli("publish", "keygen", str(tmp_path / "fleet"))
    imported = subprocess.run(
        [str(cosign), "import-key-pair", "--key", str(tmp_path / "fleet.key"), "-y"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert (tmp_path / "import-cosign.pub").read_text() == (tmp_path / "fleet.pub").read_text()
    status = push(own_registry, tmp_path, name="shared")
    image = by_digest(own_registry, status["pipelineUrl"])
    cosign_sign(cosign, env, tmp_path / "import-cosign.key", image)
    np.testing.assert_array_equal(
        serve(own_registry, status, tmp_path / "c", tmp_path / "a.log", tmp_path / "fleet.pub"),
        X[0]["x"] + 1,
    )


def test_keygen_writes_a_pair_and_never_overwrites(tmp_path) -> None:
    out = cli("publish", "keygen", str(tmp_path / "k")).stdout
    assert "OCI_VERIFY_KEY" in out
    assert (tmp_path / "k.key").stat().st_mode & 0o077 == 0  # the private key: owner only
    signer = signing.Signer.load(tmp_path / "k.key")
    assert signer.public_pem() == (tmp_path / "k.pub").read_text()
    again = cli("publish", "keygen", str(tmp_path / "k"), check=False)
    assert again.returncode != 0 and "exists; not overwriting a key" in again.stderr
    assert signing.Signer.load(tmp_path / "k.key").public_pem() == signer.public_pem()

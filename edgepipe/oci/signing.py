"""Signatures in cosign's format: sign an artifact by digest, and verify one before use.

What cosign writes for a registry without the referrers API, and what ``cosign verify
--key`` reads: a manifest tagged ``sha256-<hex>.sig`` in the artifact's repository, whose
layers are "simple signing" payloads (JSON naming the signed manifest digest), each with
an ECDSA P-256 signature of the payload, base64 DER, in a layer annotation. The crypto is
the ``cryptography`` package's; nothing here implements any.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .client import Client
from .refs import MANIFEST, NotInRegistry, OciError

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
PAYLOAD_TYPE = "cosign container image signature"


class SignatureError(OciError):
    """An artifact is unsigned, signed with another key, or does not match its signature."""


class KeyProblem(OciError):
    """A signing or verification key that cannot be used; the message says why."""


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    return digest.replace(":", "-") + ".sig"


def payload(docker_reference: str, digest: str) -> bytes:
    """The simple-signing payload cosign signs, with its key order."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _read_key_text(key: str | bytes | Path, what: str) -> bytes:
    """PEM text as given, or the file a path names."""
    if isinstance(key, bytes):
        return key
    text = str(key)
    if "-----BEGIN" in text:
        return text.encode()
    try:
        return Path(text).read_bytes()
    except OSError as exc:
        raise KeyProblem(
            f"{what} {text!r}: not PEM text and not a readable file ({exc.strerror})"
        ) from None


def _p256(key: Any, what: str) -> None:
    if not isinstance(
        key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey
    ) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyProblem(
            f"{what}: expected an ECDSA P-256 key (cosign's default), got {type(key).__name__}"
        )


@dataclass(frozen=True)
class Signer:
    """An ECDSA P-256 private key that signs payloads."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def load(cls, key: str | bytes | Path, password: str | bytes | None = None) -> Signer:
        """A PEM private key (PKCS#8 or SEC1, encrypted with ``password`` or not), or its
        file."""
        data = _read_key_text(key, "signing key")
        if b"SIGSTORE PRIVATE KEY" in data:
            raise KeyProblem(
                "signing key: this is cosign's own encrypted key format, which only cosign "
                "reads; give a PEM EC key instead (edgepipe publish keygen, or openssl ecparam "
                "-name prime256v1 -genkey | openssl pkcs8 -topk8 -nocrypt); "
                "'cosign import-key-pair' turns that PEM key into one cosign signs with too"
            )
        pw = password.encode() if isinstance(password, str) else password
        try:
            loaded = serialization.load_pem_private_key(data, password=pw or None)
        except TypeError as exc:  # encrypted without a password, or a password not needed
            raise KeyProblem(f"signing key: {exc}") from None
        except ValueError as exc:
            raise KeyProblem(f"signing key: not a PEM private key ({exc})") from None
        _p256(loaded, "signing key")
        return cls(loaded)  # type: ignore[arg-type]

    @classmethod
    def generate(cls) -> Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def sign(self, data: bytes) -> bytes:
        """An ASN.1 DER ECDSA signature of SHA-256(data), as cosign makes."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def private_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def public_pem(self) -> str:
        return public_pem(self.key.public_key())


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(key: str | bytes | Path) -> ec.EllipticCurvePublicKey:
    """A PEM public key (``cosign.pub``), given as text or as a file."""
    data = _read_key_text(key, "verification key")
    try:
        loaded = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyProblem(f"verification key: not a PEM public key ({exc})") from None
    _p256(loaded, "verification key")
    return loaded  # type: ignore[return-value]


@dataclass(frozen=True)
class Signatures:
    """The signature manifest of one digest and its payloads, as fetched (and cached)."""

    manifest: bytes
    payloads: dict[str, bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest.decode(),
            "payloads": {d: p.decode() for d, p in self.payloads.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Signatures:
        return cls(doc["manifest"].encode(), {d: p.encode() for d, p in doc["payloads"].items()})


def _signature_layers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        layer for layer in manifest.get("layers") or [] if layer.get("mediaType") == SIMPLE_SIGNING
    ]


def fetch_signatures(client: Client, repository: str, digest: str) -> Signatures:
    """The signatures of ``digest`` from its repository; SignatureError when there are none."""
    from .refs import Reference

    ref = Reference(client.registry, repository, tag=signature_tag(digest))
    try:
        raw, _ = client.get_manifest_bytes(ref)
    except NotInRegistry:
        raise SignatureError(
            f"{client.registry}/{repository}@{digest} is not signed (no {signature_tag(digest)})"
        ) from None
    manifest = json.loads(raw)
    payloads = {
        layer["digest"]: client.get_blob(repository, layer["digest"])
        for layer in _signature_layers(manifest)
    }
    return Signatures(raw, payloads)


def verify(signatures: Signatures, digest: str, key: ec.EllipticCurvePublicKey, what: str) -> None:
    """Pass when a payload names ``digest`` and its signature verifies with ``key``;
    otherwise SignatureError saying what was found."""
    manifest = json.loads(signatures.manifest)
    layers = _signature_layers(manifest)
    if not layers:
        raise SignatureError(f"{what}: the signature manifest holds no simple-signing layer")
    reasons = []
    for layer in layers:
        data = signatures.payloads.get(layer["digest"])
        if data is None or "sha256:" + hashlib.sha256(data).hexdigest() != layer["digest"]:
            reasons.append("a payload does not match its digest")
            continue
        if not _valid(key, (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, ""), data):
            reasons.append("a signature does not verify with this key")
            continue
        try:
            critical = json.loads(data)["critical"]
            signed = critical["image"]["docker-manifest-digest"]
        except (ValueError, KeyError, TypeError):
            reasons.append("a payload is not a simple-signing document")
            continue
        if signed == digest and critical.get("type") == PAYLOAD_TYPE:
            return
        reasons.append(f"a signature is for {signed}, not {digest}")
    raise SignatureError(
        f"{what}: refused, no valid signature for {digest} with the verification key "
        f"({'; '.join(sorted(set(reasons)))})"
    )


def _valid(key: ec.EllipticCurvePublicKey, signature_b64: str, data: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def sign(client: Client, repository: str, digest: str, signer: Signer) -> str:
    """Sign ``repository@digest`` as cosign does: add a simple-signing layer to the
    ``sha256-<hex>.sig`` manifest (keeping other signatures there); its reference."""
    body = payload(f"{client.registry}/{repository}", digest)
    layer = client.push_bytes(repository, body, SIMPLE_SIGNING)
    layer["annotations"] = {SIGNATURE_ANNOTATION: base64.b64encode(signer.sign(body)).decode()}
    tag = signature_tag(digest)
    try:
        existing = fetch_signatures(client, repository, digest)
        old_layers = _signature_layers(json.loads(existing.manifest))
    except SignatureError:
        old_layers = []
    public = signer.key.public_key()
    for old in old_layers:  # already signed by this key (a re-publish): nothing to add
        sig = (old.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
        if old["digest"] == layer["digest"] and _valid(public, sig, body):
            return f"{client.registry}/{repository}:{tag}"
    # cosign's own signature of the same payload (by another key) has the same layer digest;
    # it stays beside this one, as cosign keeps it.
    kept = old_layers
    layers = [*kept, layer]
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
        "config": {},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": client.push_bytes(
            repository, json.dumps(config, separators=(",", ":")).encode(), IMAGE_CONFIG
        ),
        "layers": layers,
    }
    client.put_manifest(repository, manifest, tag=tag)
    return f"{client.registry}/{repository}:{tag}"

"""Registry logins from Secrets, and how an engine pod gets one without seeing its value.

A Secret holds either ``username``/``password`` keys or a ``.dockerconfigjson`` (the forms
``kubectl create secret generic`` and ``kubectl create secret docker-registry`` make). The
operator reads it to reach the registry itself; the engine pod gets references only: env
vars from ``secretKeyRef``, or the Secret mounted as a file (``OCI_AUTH_FILE``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from edgepipe import oci
from edgepipe.resources import ModelRegistry, RegistryRef

if TYPE_CHECKING:
    from edgepipe.oci import signing

AUTH_DIR = "/etc/edgepipe/registry"
DOCKER_CONFIG_KEY = ".dockerconfigjson"

SecretForm = Literal["basic", "dockerconfig"]


class SecretProblem(Exception):
    """A registry Secret that is missing or holds no login: (reason, message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Login:
    credentials: oci.Credentials
    form: SecretForm
    secret: str


def login_from_secret(secret: dict[str, Any] | None, name: str) -> Login:
    """The login a Secret holds, and in which form."""
    if secret is None:
        raise SecretProblem(
            "SecretNotFound",
            f"registry secret {name!r} not found; create it with "
            f"kubectl create secret generic {name} --from-literal=username=… "
            "--from-literal=password=…",
        )
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    if "username" in data and "password" in data:
        return Login(oci.Credentials(data["username"], data["password"]), "basic", name)
    if DOCKER_CONFIG_KEY in data:
        try:
            creds = oci.Credentials.from_docker_config(data[DOCKER_CONFIG_KEY])
        except oci.OciError:
            creds = None
        if creds is not None:
            return Login(creds, "dockerconfig", name)
    raise SecretProblem(
        "InvalidSecret",
        f"secret {name!r} has neither username/password keys nor a {DOCKER_CONFIG_KEY}",
    )


def pod_registry(
    registry: ModelRegistry | None, login: Login | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumes, volume mounts) that give the engine container its registry login
    and transport, by reference to the Secret: no value is copied into the Deployment."""
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if registry is not None and registry.plain_http:
        env.append({"name": "OCI_PLAIN_HTTP", "value": "true"})
    if login is None:
        return env, volumes, mounts
    if login.form == "basic":
        for var, key in (("OCI_USERNAME", "username"), ("OCI_PASSWORD", "password")):
            ref = {"secretKeyRef": {"name": login.secret, "key": key}}
            env.append({"name": var, "valueFrom": ref})
    else:
        env.append({"name": "OCI_AUTH_FILE", "value": f"{AUTH_DIR}/{DOCKER_CONFIG_KEY}"})
        volumes.append({"name": "registry-login", "secret": {"secretName": login.secret}})
        mounts.append({"name": "registry-login", "mountPath": AUTH_DIR, "readOnly": True})
    return env, volumes, mounts


def publish_target(kube: Any, registry: RegistryRef, namespace: str) -> oci.Target:
    """Where a Publish pushes (and its edges upload logs), with its Secret's login."""
    creds = oci.Credentials()
    if registry.secret_ref:
        name = registry.secret_ref.name
        creds = login_from_secret(kube.read_secret(name, namespace), name).credentials
    return oci.Target.parse(registry.url, creds, registry.plain_http)


def signer_from_secret(secret: dict[str, Any] | None, name: str) -> signing.Signer:
    """The signing key a Secret holds: ``key`` (PEM EC P-256), and ``password`` when the
    key is encrypted."""
    # Here, not at the top: cryptography (7 MB) is for Publishes that sign, not every start.
    from edgepipe.oci import signing

    if secret is None:
        raise SecretProblem(
            "SecretNotFound",
            f"signing secret {name!r} not found; create it with kubectl create secret "
            f"generic {name} --from-file=key=signing.pem",
        )
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    if "key" not in data:
        raise SecretProblem(
            "SigningKeyInvalid",
            f"signing secret {name!r} has no 'key' (found: {', '.join(sorted(data)) or 'nothing'})",
        )
    try:
        return signing.Signer.load(data["key"], data.get("password"))
    except signing.KeyProblem as exc:
        raise SecretProblem("SigningKeyInvalid", f"signing secret {name!r}: {exc}") from None

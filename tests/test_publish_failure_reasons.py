"""The Publish reconciler's one table of failures: each error no retry can fix gives its
reason and message, a registry that is down or a model that does not answer passes through
to be retried; and only the operator's CLI reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from edgepipe_operator.history import VersionNotKept
from edgepipe_operator.publishes import PublishFailed, failing
from edgepipe_operator.registry import SecretProblem
from edgepipe_operator.resolve import ModelUnreachable
from pydantic import ValidationError

from edgepipe import oci
from edgepipe.config import ConfigError
from edgepipe.publish import PublishError
from edgepipe.resources import PublishSpec

OPERATOR = Path(__file__).resolve().parents[1] / "operator" / "edgepipe_operator"


def bad_publish_spec() -> ValidationError:
    with pytest.raises(ValidationError) as info:
        PublishSpec.model_validate({"pipeline": "p"})  # no registry
    return info.value


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        (bad_publish_spec(), "InvalidSpec", "pipeline 'p': spec.registry: Field required"),
        (ConfigError("spec.steps: empty", "spec.steps"), "InvalidPipeline", "spec.steps: empty"),
        (VersionNotKept("v1 is not among its kept versions"), "VersionNotAvailable", "v1 is not"),
        (SecretProblem("SecretNotFound", "secret 'r' not found"), "SecretNotFound", "secret 'r'"),
        (oci.CredentialsRequired("reg:5000"), "CredentialsRequired", "needs credentials"),
        (oci.AuthError("no"), "Unauthorized", "registry r refused the credentials of secret s: no"),
        (PublishError("too big"), "PublishError", "pipeline 'p': too big"),
        (oci.NotInRegistry("blob x: not found"), "PublishError", "blob x: not found"),
        (oci.DigestMismatch("bad bytes"), "PublishError", "bad bytes"),
    ],
)
def test_each_final_error_has_its_reason(error: Exception, reason: str, message: str) -> None:
    refused = "registry r refused the credentials of secret s: "
    with pytest.raises(PublishFailed) as info, failing("pipeline 'p': ", unauthorized=refused):
        raise error
    assert info.value.reason == reason
    assert message in info.value.message
    # The refused-credentials message replaces the context; every other one follows it.
    if reason != "Unauthorized":
        assert info.value.message.startswith("pipeline 'p': ")


@pytest.mark.parametrize(
    "error", [oci.RegistryUnavailable("down"), ModelUnreachable("m"), KeyError("a bug")]
)
def test_retried_and_unknown_errors_pass_through(error: Exception) -> None:
    with pytest.raises(type(error)), failing("pipeline 'p': "):
        raise error


def test_only_the_cli_reads_the_settings_from_the_environment() -> None:
    readers = []
    for path in sorted(OPERATOR.glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            reads = (isinstance(node, ast.Attribute) and node.attr in ("from_env", "environ")) or (
                isinstance(node, ast.Name) and node.id == "getenv"
            )
            if not reads:
                continue
            line = lines[node.lineno - 1].strip()
            # kube.py finds the apiserver as every Kubernetes client does (KUBECONFIG, the
            # in-cluster KUBERNETES_SERVICE_HOST): a connection, not one of our settings.
            connection = path.name == "kube.py" and "EDGEPIPE" not in line
            if path.name != "cli.py" and not connection:
                readers.append((path.name, line))
    # startup.configure's fallback (for kopf's own CLI) reads an empty mapping: the defaults.
    assert [name for name, line in readers if "from_env({})" not in line] == []
    assert [name for name, _ in readers] == ["startup.py"]

"""The Publish reconciler's one table of failures: each error no retry can fix gives its
reason and message, a registry that is down or a model that does not answer passes through
to be retried; and only the operator's CLI reads the environment."""

from __future__ import annotations

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

"""Plain HTTP or TLS to a registry: the CLI and the operator's Publish decide with one rule
(oci.speaks_plain_http): what the user says, else plain HTTP only on loopback."""

from __future__ import annotations

import pytest
from edgepipe_operator.registry import publish_target

from edgepipe import oci
from edgepipe.cli.common import target
from edgepipe.resources import PublishSpec

# (registry url, plainHttp as given, plain HTTP expected)
CASES = [
    ("127.0.0.1:5000/edge", None, True),
    ("localhost:5000", None, True),
    ("[::1]:5000/edge", None, True),
    ("registry.example.com/edge", None, False),
    ("10.0.0.5:5000/edge", None, False),
    ("127.0.0.1:5000/edge", False, False),
    ("registry.example.com/edge", True, True),
]


@pytest.mark.parametrize(("url", "given", "plain"), CASES)
def test_the_cli_and_a_publish_agree(url: str, given: bool | None, plain: bool) -> None:
    registry: dict = {"url": url} | ({} if given is None else {"plainHttp": given})
    spec = PublishSpec.model_validate({"pipeline": "p", "registry": registry})
    assert publish_target(None, spec.registry, "ns").plain_http is plain
    assert target(url, None, None, given).plain_http is plain
    host = oci.Target.parse(url).registry
    assert oci.speaks_plain_http(host, given) is plain

"""The operator starts without the publish stack (issue 29's floor): jinja2, the oras SDK,
requests, jsonschema, cryptography and urllib3 load with the first Publish, rollout or edge
poll that needs them, through ``edgepipe.oci``'s and ``edgepipe.publish``'s lazy names."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.paths import ROOT

# What only a Publish, a rollout's pointer moves or the edge poll's registry reads need.
PUBLISH_STACK = ("requests", "jinja2", "oras", "jsonschema", "cryptography", "urllib3")

# In a fresh interpreter, as the operator image runs it: without the `kubernetes` package
# (the image has none; kopf imports it when it is there, and it brings requests itself).
PROBE = """
import json, sys
sys.modules["kubernetes"] = None
stack = %r
def loaded():
    return sorted(m for m in stack if m in sys.modules)
import edgepipe_operator.cli, edgepipe_operator.startup
at_start = loaded()
from edgepipe import oci, publish
names = oci.Credentials, oci.OciError, oci.Reference, publish.PublishError
cheap = loaded()
from edgepipe.oci import Client
from edgepipe.publish import publish as do_publish
import edgepipe.oci.client, edgepipe.publish.flow
try:
    oci.no_such_name
    missing = False
except AttributeError:
    missing = True
print(json.dumps({
    "at_start": at_start,
    "after_names": cheap,
    "after_use": loaded(),
    "same": [Client is edgepipe.oci.client.Client, do_publish is edgepipe.publish.flow.publish,
             oci.Target.__module__, oci.modelfiles.__name__],
    "missing_raises": missing,
}))
"""


def test_the_operator_starts_without_the_publish_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE % (PUBLISH_STACK,)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(out.stdout)
    assert found["at_start"] == [], "imported at the operator's start: " + ", ".join(
        found["at_start"]
    )
    assert found["after_names"] == []  # credentials, references and errors are cheap
    # ... and the lazy names do load the stack when used (so the check above can fail).
    assert found["after_use"] == sorted(PUBLISH_STACK)
    assert found["same"] == [True, True, "edgepipe.oci.target", "edgepipe.oci.modelfiles"]
    assert found["missing_raises"]

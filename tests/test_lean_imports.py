"""The operator starts without the publish stack (issue 29's floor): jinja2, the oras SDK,
requests, jsonschema, cryptography and urllib3 load with the first Publish, rollout or edge
poll that needs them, through ``edgepipe.oci``'s and ``edgepipe.publish``'s lazy names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers.kubeconfigs import write_kubeconfig
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


# What no `edgepipe` command that only talks to the cluster (or prints help) needs: the
# engine client's arrays and tables, and kubernetes' CoreV1Api (~280 pydantic models) and
# CustomObjectsApi.
CLI_HEAVY = (
    "numpy",
    "pyarrow",
    "pandas",
    "onnx",
    "onnxruntime",
    "PIL",
    "kubernetes.client.api.core_v1_api",
    "kubernetes.client.api.custom_objects_api",
    "edgepipe.config",
    "edgepipe.resources",
)

# The console script's own path, in a fresh interpreter: --help, a registry command and a
# cluster command that fail at once (nothing listens), then the engine client.
CLI_PROBE = """
import json, os, sys
heavy = %r
def loaded():
    return sorted(m for m in heavy if m in sys.modules)
from edgepipe.cli import run
def command(*args):
    sys.argv = ["edgepipe", *args]
    try:
        run()
    except SystemExit as exc:
        return exc.code
    return 0
found = {"at_import": loaded(), "help": command("--help"), "after_help": loaded()}
found["model_list"] = command("model", "list", "--registry", "127.0.0.1:1/x")
found["spec_models"] = sorted(m for m in ("pydantic", "edgepipe.spec") if m in sys.modules)
found["get"] = command("pipeline", "get", "p", "--kubeconfig", os.environ["PROBE_KUBECONFIG"])
found["after_get"] = loaded()
found["kubernetes"] = "kubernetes.client.api_client" in sys.modules
from edgepipe.client import EngineClient, EngineClientError
from edgepipe.cli.common import expected_errors
found["engine_error"] = EngineClientError in expected_errors()
found["after_engine"] = loaded()
print("\\n" + json.dumps(found))
"""


def test_cluster_commands_start_without_numpy_or_all_of_kubernetes(tmp_path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1")  # refused
    out = subprocess.run(
        [sys.executable, "-c", CLI_PROBE % (CLI_HEAVY,)],
        cwd=ROOT,
        env={**os.environ, "PROBE_KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(out.stdout.splitlines()[-1])
    assert found["at_import"] == [] and found["after_help"] == [], found
    assert found["help"] == 0 and found["get"] == 1
    # A registry command that fails says so in one line without building the spec's models.
    assert found["model_list"] == 1 and "cannot reach registry 127.0.0.1:1" in out.stderr
    assert found["spec_models"] == [], found["spec_models"]
    assert "cannot reach the cluster" in out.stderr  # the command did talk to the client
    assert found["after_get"] == [], "loaded by 'pipeline get': " + ", ".join(found["after_get"])
    assert found["kubernetes"]
    # ... and the engine client's names still load numpy when used (the check can fail),
    # after which its error is one of the CLI's one-line errors again.
    assert found["after_engine"] == ["numpy"] and found["engine_error"]

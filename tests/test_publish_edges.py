"""A Publish with edge locations and a signing Secret, reconciled by the real operator:
signed artifacts, each edge's name and docker line in its status, and each edge's last
inference-log upload read back from the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepipe import fleet, oci
from edgepipe.client import EngineClient
from edgepipe.localengine import EngineProcess
from edgepipe.oci import signing
from tests.helpers.cli import cli
from tests.helpers.kube import wait_for
from tests.helpers.pipelines import pipeline, wait_phase
from tests.helpers.publishes import apply_publish, publish_status, push_add1, wait_publish

pytestmark = pytest.mark.cluster


def test_signed_publish_with_edges(
    operator, kubectl, auth_registry, models_dir, cluster, namespace, tmp_path
) -> None:
    reg = auth_registry
    model = push_add1(reg, models_dir)
    kubectl("create", "secret", "generic", "registry-creds",
            f"--from-literal=username={reg.username}", f"--from-literal=password={reg.password}")  # fmt: skip
    signer = signing.Signer.generate()
    (tmp_path / "key.pem").write_text(signer.private_pem())
    kubectl(
        "create", "secret", "generic", "edge-signing", f"--from-file=key={tmp_path / 'key.pem'}"
    )
    (tmp_path / "bad.pem").write_text("not a key")
    kubectl("create", "secret", "generic", "bad-signing", f"--from-file=key={tmp_path / 'bad.pem'}")
    steps = [{"model": {"name": "add1", "url": model.reference, "sha256": model.sha256}}]
    kubectl.apply(pipeline("adder", steps=steps))
    wait_phase(kubectl, "adder", "Running")

    apply_publish(kubectl, reg, "fleet", edges=["store-1", "store-2"],
                  signing={"secretRef": {"name": "edge-signing"}})  # fmt: skip
    st = wait_publish(kubectl, "Published", "fleet")
    assert st["publicKey"] == signer.public_pem()
    assert [e["name"] for e in st["edges"]] == ["store-1", "store-2"]
    assert "-e EDGE_NAME=store-1" in st["edges"][0]["dockerRunCommand"]
    assert "-e OCI_VERIFY_KEY" in st["edges"][0]["dockerRunCommand"]
    # Both artifacts are signed, in cosign's place, by the Secret's key.
    client = oci.Client(reg.host, oci.Credentials(reg.username, reg.password), plain_http=True)
    key = signing.load_public_key(st["publicKey"])
    for url in (st["pipelineUrl"], st["helmChartReference"]):
        ref = oci.Reference.parse(url)
        _, digest = client.get_manifest(ref)
        signing.verify(signing.fetch_signatures(client, ref.repository, digest), digest, key, url)
    assert set(st["signatures"]) == {"pipeline", "chart"}
    # Each edge's pointer names the published manifest, and its docker line follows it.
    _, published = client.get_manifest(oci.Reference.parse(st["pipelineUrl"]))
    for i, edge in enumerate(("store-1", "store-2")):
        pointer = fleet.pointer_url(st["pipelineUrl"], edge)
        assert client.get_manifest(oci.Reference.parse(pointer))[1] == published
        assert f"-e PIPELINE_URL={pointer} " in st["edges"][i]["dockerRunCommand"]

    # Edge store-1 runs it as its docker line says (verifying), and serves 5 requests.
    env = {
        "PIPELINE_URL": fleet.pointer_url(st["pipelineUrl"], "store-1"),
        "OCI_REGISTRY": reg.host, "OCI_USERNAME": reg.username,
        "OCI_PASSWORD": reg.password, "OCI_PLAIN_HTTP": "true", "EDGE_NAME": "store-1",
        "OCI_VERIFY_KEY": st["publicKey"], "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp_path / "cache"),
        "EDGEPIPE_ENGINE_LOG_SEGMENT_SECONDS": "0.5", "EDGEPIPE_ENGINE_LOG_UPLOAD_SECONDS": "0.5",
    }  # fmt: skip
    with EngineProcess(env=env, log_path=tmp_path / "edge.log") as engine:
        for i in range(5):
            EngineClient(engine.url).infer_records("adder", [{"x": np.full((1, 4), i, np.float32)}])
        edges = wait_for(
            "store-1's upload in the Publish status",
            lambda: (
                (e := publish_status(kubectl, "fleet").get("edges") or [])
                and e[0].get("lastUploadRecords") == 5
                and e
            ),
            60,
        )
    assert edges[0]["uploadedSegments"] == 1 and edges[0]["lastUpload"].endswith("Z")
    assert "lastUpload" not in edges[1]

    # The CLI manages the list; the Publish follows.
    kube = ["--kubeconfig", str(cluster["kubeconfig"]), "-n", namespace]
    out = cli("publish", "add-edge", "fleet", "store-3", *kube).stdout
    assert "Run it at edge store-3" in out and "EDGE_NAME=store-3" in out
    cli("publish", "remove-edge", "fleet", "store-2", *kube)
    st = publish_status(kubectl, "fleet")
    assert [e["name"] for e in st["edges"]] == ["store-1", "store-3"]
    again = cli("publish", "add-edge", "fleet", "store-3", *kube, check=False)
    assert again.returncode != 0 and "already lists edge 'store-3'" in again.stderr
    bad = cli("publish", "add-edge", "fleet", "Store_4", *kube, check=False)
    assert bad.returncode != 0 and "not an edge name" in bad.stderr
    shown = json.loads(cli("publish", "show", "fleet", *kube, "-o", "json").stdout)
    assert [e["name"] for e in shown["edges"]] == ["store-1", "store-3"]
    assert "EDGE_NAME: store-3" in shown["edges"][1]["composeYaml"]
    assert "edgeName: store-3" in shown["edges"][1]["localValuesYaml"]
    text = cli("publish", "get", "fleet", *kube).stdout
    assert "store-1 (last log upload" in text and "store-3 (no logs uploaded yet)" in text
    # The logs read through the Python client find the registry from the Publish.
    from edgepipe.client.cluster import Client

    df = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace).logs("adder")
    assert len(df) == 5 and set(df["edge"]) == {"store-1"}

    # A signing Secret without a usable key fails the Publish, saying why.
    apply_publish(kubectl, reg, "badly-signed", signing={"secretRef": {"name": "bad-signing"}})
    st = wait_publish(kubectl, "Failed", "badly-signed")
    assert st["reason"] == "SigningKeyInvalid" and "bad-signing" in st["message"]

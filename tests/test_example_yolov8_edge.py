"""The tutorial replay in examples/yolov8-edge runs end to end, as the walkthrough page says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.cluster


def test_the_tutorial_replay(trained_yolo_path, tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "yolov8-edge" / "replay.py"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for heading in (
        "1. Upload the model",
        "2. Build the pipeline",
        "3. Inference through",
        "4. Publish the pipeline",
        "5. DevOps",
        "6. The same inference",
    ):
        assert heading in out
    assert "same as in the cluster: True" in out
    assert "helmChartVersion: 0.0.1-" in out
    assert (tmp_path / "cluster.png").exists() and (tmp_path / "edge.png").exists()

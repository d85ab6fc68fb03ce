"""``edgepipe console`` in Debian's chromium: the real console process reads the real test
apiserver, where the test writes Publish statuses as the operator writes them; the test
checks what a person sees (rows, states and their colours, waves, an aborted rollout), with
screenshots kept under test-artifacts/console/ when it fails."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgepipe.client.cluster import Client
from tests.helpers import browser
from tests.helpers.fleetview import V1, V2, StatusWriter, edge, publish, stamp, waves
from tests.helpers.kube import wait_for
from tests.helpers.paths import ROOT
from tests.helpers.pipelines import pipeline

pytestmark = pytest.mark.cluster

# The state colours of style.css, as chromium computes them.
GREEN, BLUE, GREY, RED = (
    "rgb(26, 127, 55)",
    "rgb(9, 105, 218)",
    "rgb(110, 119, 129)",
    "rgb(207, 34, 46)",
)
DOCK = ["dock-1", "dock-2", "dock-3", "dock-4"]


@pytest.fixture
def shots(request: pytest.FixtureRequest):
    """Where the screenshots go: kept when the test fails, removed when it passes."""
    where = ROOT / "test-artifacts" / "console" / request.node.name
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    failed = request.session.testsfailed
    yield where
    if request.session.testsfailed == failed:
        shutil.rmtree(where, ignore_errors=True)
    else:
        print(f"screenshots kept in {where}")


def _records(edge: int, step: int) -> int:
    return 30 + 9 * edge + 12 * step + (edge * step) % 5


def _upload(edge: int, step: int) -> dict:
    """The edge's latest log upload at a step of the test (written as the operator would)."""
    return {
        "lastUpload": stamp(60 - 20 * step - edge),
        "lastUploadRecords": _records(edge, step),
        "uploadedSegments": step + 1,
    }


def _tuples(driver, script: str, *args) -> list[tuple]:
    return [tuple(row) for row in driver.execute_script(script, *args)]


def _cells(driver, card: str) -> list[tuple[str, str, str, str]]:
    """(edge, state, row class, state colour) per edge row of a Publish's card."""
    return _tuples(
        driver,
        """
        return [...document.querySelectorAll(`.publish[data-name="${arguments[0]}"] tr.edge`)]
          .map(r => [r.querySelector('.name').textContent, r.querySelector('.state').textContent,
                     r.className, getComputedStyle(r.querySelector('.state')).backgroundColor]);
        """,
        card,
    )


def _waves(driver, card: str) -> list[tuple[str, str]]:
    return _tuples(
        driver,
        """
        return [...document.querySelectorAll(`.publish[data-name="${arguments[0]}"] li.wave`)]
          .map(w => [w.querySelector('.wave-state').textContent, w.className]);
        """,
        card,
    )


def _text(driver, selector: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector
    )


def test_the_console_shows_edges_waves_and_an_aborted_rollout(
    cluster: dict, namespace: str, kubectl, tmp_path: Path, shots: Path
) -> None:
    if browser.missing():  # scripts/setup --dev installs them: a failure, never a skip
        pytest.fail(browser.missing())
    client = Client(kubeconfig=str(cluster["kubeconfig"]), namespace=namespace)
    write = StatusWriter(client)
    kubectl.apply(pipeline("adder", deployed=False))
    write(
        "pipelines",
        "adder",
        {
            "phase": "Undeployed",
            "version": V2,
            "versions": [
                {"version": v, "createdAt": stamp(100), "specDigest": v} for v in (V1, V2)
            ],
        },
    )
    rollout = {"waves": [{"edges": DOCK[:2]}, {"percent": 100}]}
    offline = _upload(3, 0)  # dock-4's one upload before it went offline
    kubectl.apply(publish("pub", DOCK, rollout=rollout))
    base = {"phase": "Published", "pipelineVersion": V2, "helmChartVersion": "0.0.1-9d3e41c0"}
    write(
        "publishes",
        "pub",
        {
            **base,
            "rollout": {
                "phase": "Progressing",
                "version": V2,
                "wave": 1,
                "waves": waves((DOCK[:2], "Progressing"), (DOCK[2:], "Pending")),
                "updated": 1,
                "pending": 0,
                "failed": 0,
                "startedAt": stamp(20),
            },
            "edges": [
                edge("dock-1", "Current", V2, 1, **_upload(0, 0)),
                edge(
                    "dock-2", "Downloading", V1, 1, reason="fetching 2 of 3 layers", **_upload(1, 0)
                ),
                edge("dock-3", "Current", V1, 2, **_upload(2, 0)),
                edge("dock-4", "Offline", V1, 2, seen=600, **offline),
            ],
        },
    )
    cams = ["cam-1", "cam-2", "cam-3"]
    kubectl.apply(publish("bad", cams))
    why = "2 edges failed, more than maxFailures 1"
    write(
        "publishes",
        "bad",
        {
            **base,
            "rollout": {
                "phase": "Aborted",
                "version": V2,
                "wave": 1,
                "waves": waves((cams[:2], "Aborted"), (cams[2:], "Pending")),
                "updated": 0,
                "pending": 0,
                "failed": 2,
                "failedEdges": cams[:2],
                "failureReasons": {"cam-1": "probe failed after the swap"},
                "reason": why,
            },
            "edges": [
                edge("cam-1", "RolledBack", V1, 1, reason="probe failed after the swap"),
                edge("cam-2", "Rejected", V1, 1, reason="signature does not verify"),
                edge("cam-3", "Current", V1, 2),
            ],
        },
    )

    console = browser.ConsoleProcess(cluster["kubeconfig"], namespace, tmp_path / "console.log")
    try:
        console.wait_ready()
        # Only the loopback names are answered (another site renamed 127.0.0.1 is refused).
        foreign = urllib.request.Request(
            console.url + "api/fleet", headers={"Host": f"evil.example:{console.port}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(foreign, timeout=5)
        assert refused.value.code == 403
        with browser.chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver:
            driver.get(console.url)
            try:
                _look(driver, write, shots, offline)
            finally:
                driver.save_screenshot(str(shots / "last.png"))
    except BaseException:
        print(console.log())
        raise
    finally:
        console.stop()


def _look(driver, write: StatusWriter, shots: Path, offline: dict) -> None:
    rows = wait_for("the edges of pub", lambda: _cells(driver, "pub"), timeout=30)
    driver.save_screenshot(str(shots / "1-wave-1.png"))
    assert [(r[0], r[1]) for r in rows] == [
        ("dock-1", "Current"),
        ("dock-2", "Downloading"),
        ("dock-3", "Current"),
        ("dock-4", "Offline"),
    ]
    assert [r[2] for r in rows] == [
        "edge state-current",
        "edge state-downloading",
        "edge state-current",
        "edge state-offline",
    ]
    assert [r[3] for r in rows] == [GREEN, BLUE, GREEN, GREY]
    pipelines = _text(driver, "#pipelines tbody")
    assert "adder" in pipelines and "Undeployed" in pipelines and V1[:8] in pipelines
    card = _text(driver, '.publish[data-name="pub"]')
    assert (
        "fetching 2 of 3 layers" in card
        and "10m ago" in card
        and f"{_records(0, 0)} records" in card
    )
    assert "wave 1/2: 1 updated, 0 pending, 0 failed" in card
    assert _waves(driver, "pub") == [
        ("Progressing", "wave wave-progressing"),
        ("Pending", "wave wave-pending"),
    ]

    # The operator finishes wave 1, moves wave 2, and edges upload again: the page follows.
    write(
        "publishes",
        "pub",
        {
            "rollout": {
                "phase": "Progressing",
                "wave": 2,
                "waves": waves((DOCK[:2], "Done"), (DOCK[2:], "Progressing")),
                "updated": 2,
            },
            "edges": [
                edge("dock-1", "Current", V2, 1, **_upload(0, 1)),
                edge("dock-2", "Current", V2, 1, **_upload(1, 1)),
                edge("dock-3", "Downloading", V1, 2, **_upload(2, 1)),
                edge("dock-4", "Offline", V1, 2, seen=600, **offline),
            ],
        },
    )
    wait_for("wave 1 done", lambda: _waves(driver, "pub")[0][0] == "Done", timeout=20)
    assert _waves(driver, "pub") == [
        ("Done", "wave wave-done"),
        ("Progressing", "wave wave-progressing"),
    ]
    driver.save_screenshot(str(shots / "2-wave-2.png"))
    write(
        "publishes",
        "pub",
        {
            "rollout": {
                "phase": "Complete",
                "wave": 2,
                "waves": waves((DOCK[:2], "Done"), (DOCK[2:], "Done")),
                "updated": 4,
                "finishedAt": stamp(0),
            },
            "edges": [
                edge(e, "Current", V2, 1 + (i > 1), **_upload(i, 2)) for i, e in enumerate(DOCK)
            ],
        },
    )
    wait_for("wave 2 done", lambda: _waves(driver, "pub")[1][0] == "Done", timeout=20)
    assert _waves(driver, "pub")[1] == ("Done", "wave wave-done")
    assert "Complete: 4 updated, 0 pending, 0 failed" in _text(driver, '.publish[data-name="pub"]')
    assert [r[3] for r in _cells(driver, "pub")] == [GREEN] * 4
    # Each edge's uploads are one line of the chart (kept by the server between reads);
    # dock-4 was offline during the second.
    legend = _text(driver, '.publish[data-name="pub"] .u-legend')
    assert all(e in legend for e in DOCK), legend
    points = driver.execute_script(
        "return fetch('/api/fleet').then(r => r.json()).then(f => f.publishes"
        ".find(p => p.name === 'pub').edges.map(e => e.uploads.map(p => p[1])))"
    )
    assert points == [[_records(i, k) for k in range(3) if (i, k) != (3, 1)] for i in range(4)]

    # The aborted rollout: its badge, its reason, its failing edges, and red rows.
    bad = _text(driver, '.publish[data-name="bad"] .rollout')
    assert "Aborted" in bad and "2 edges failed, more than maxFailures 1" in bad
    assert "cam-1 (probe failed after the swap), cam-2" in bad
    assert (
        driver.execute_script(
            "return document.querySelector('.publish[data-name=\"bad\"] .rollout').className"
        )
        == "rollout rollout-aborted"
    )
    assert _waves(driver, "bad") == [
        ("Aborted", "wave wave-aborted"),
        ("Pending", "wave wave-pending"),
    ]
    assert [(r[1], r[3]) for r in _cells(driver, "bad")] == [
        ("RolledBack", RED),
        ("Rejected", RED),
        ("Current", GREEN),
    ]
    driver.save_screenshot(str(shots / "3-complete-and-aborted.png"))
    if os.environ.get("EDGEPIPE_DOCS_SCREENSHOT"):  # refreshes docs/assets/console.png
        driver.set_window_size(1280, 1500)
        driver.save_screenshot(str(ROOT / "docs" / "assets" / "console.png"))

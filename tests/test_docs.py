"""The documentation: the site builds with `mkdocs build --strict` (a broken link, a page left
out of the nav, or a setting or metric the code does not have fails it), the README stays
one screen, and the versions the pages show are the example's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from edgepipe.config import load_config
from tests.helpers import walkthrough as wt
from tests.helpers.paths import ROOT

UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_strict_with_the_generated_reference(tmp_path) -> None:
    proc = build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("cli", "resources", "settings", "metrics", "errors", "programs"):
        assert (tmp_path / "site" / "reference" / page / "index.html").exists(), page
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "rollback" in cli and "keygen" in cli  # mkdocs-click read the commands
    assert "Sentinel" not in cli  # click's unset defaults, which the table style prints
    pages = [p.read_text() for p in (tmp_path / "site").rglob("*.html")]
    assert not [p for p in pages if "fonts.googleapis" in p]  # nothing fetched when viewed
    metrics = (tmp_path / "site" / "reference" / "metrics" / "index.html").read_text()
    assert "edgepipe_requests_total" in metrics


def test_a_missing_page_or_a_setting_or_metric_the_code_lacks_fails_the_build(tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "concepts" / "edge.md"
    page.write_text(
        page.read_text() + "\nSee [the missing page](no-such-page.md), "
        "`EDGEPIPE_ENGINE_NO_SUCH_SETTING` and `edgepipe_no_such_metric_total`.\n"
    )
    proc = build(copy, tmp_path / "site")
    assert proc.returncode != 0
    for name in ("no-such-page.md", "EDGEPIPE_ENGINE_NO_SUCH_SETTING", "edgepipe_no_such_metric"):
        assert name in proc.stderr, name


def test_the_readme_is_one_screen_and_its_map_points_at_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link
    assert "./scripts/demo" in readme and "./scripts/test" in readme


def test_every_version_shown_is_the_examples() -> None:
    """A full version in the docs is examples/pipeline.yaml's or its model's, as they are."""
    config = load_config(ROOT / "examples" / "pipeline.yaml")
    allowed = {config.compute_version(), config.steps[0].model.url.rpartition(":")[2]}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    stale = [f"{p.relative_to(ROOT)}: {v}" for p in pages for v in UUID.findall(p.read_text())]
    assert [s for s in stale if s.rpartition(": ")[2] not in allowed] == []


def test_the_readme_shows_only_output_the_walkthrough_checks() -> None:
    """The README's taste of the walkthrough prints nothing the tested page does not."""
    checked = {line for cmd in wt.commands(wt.PAGE.read_text()) for line in cmd.expected}
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    shown = [ln[2:] for b in blocks for ln in b.splitlines() if ln.startswith("# ")]
    assert shown and [s for s in shown if s not in checked] == []


def test_the_readme_map_names_every_written_page() -> None:
    """Every hand-written page in the site's nav (the reference aside) is linked from the
    README's map, so a new page is found from the first screen."""

    def pages(node) -> list[str]:
        if isinstance(node, str):
            return [node]
        items = node.values() if isinstance(node, dict) else node
        return [p for item in items for p in pages(item)]

    nav = pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    written = [p for p in nav if (ROOT / "docs" / p).exists() and p.split("/")[0] != "reference"]
    written.remove("index.md")
    readme = (ROOT / "README.md").read_text()
    assert written and [p for p in written if f"](docs/{p})" not in readme] == []

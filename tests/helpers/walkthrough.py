"""The walkthrough page as a script: its marked bash blocks, the commands in them, and the
output lines the page says each command prints (the rules are at the top of the page)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.helpers.paths import ROOT

PAGE = ROOT / "docs" / "getting-started" / "walkthrough.md"
BLOCK = re.compile(r"<!-- walkthrough -->\n```bash\n(.*?)```", re.S)
MARK = "@@walkthrough-command-{}@@"


@dataclass
class Command:
    """One command as pasted (continuation lines included) and the lines it must print."""

    lines: list[str]
    expected: list[str] = field(default_factory=list)


def blocks(text: str) -> list[str]:
    found = BLOCK.findall(text)
    assert found, f"{PAGE.relative_to(ROOT)} has no <!-- walkthrough --> bash block"
    return found


def commands(text: str) -> list[Command]:
    """Every block's commands in page order. A `# ` line directly below a command (or below
    one of its expected lines) is expected output; after a blank line it is prose."""
    out: list[Command] = []
    for block in blocks(text):
        current: Command | None = None  # the command whose output lines may follow
        continued = False
        for line in block.splitlines():
            if continued:
                current.lines.append(line)
            elif line.startswith("#"):
                if current is not None:
                    current.expected.append(line[2:] if line.startswith("# ") else "")
                continue
            elif not line.strip():
                current = None
                continue
            else:
                current = Command([line])
                out.append(current)
            continued = line.endswith("\\")
    return out


def script(cmds: list[Command]) -> str:
    """The commands as one script, with a mark printed after each command that has expected
    output, so that each is checked against what it printed, not against the whole run."""
    lines = ["set -euo pipefail"]
    for i, cmd in enumerate(cmds):
        lines += cmd.lines
        if cmd.expected:
            lines.append(f"echo '{MARK.format(i)}'")
    return "\n".join(lines) + "\n"


def pattern(expected: str) -> re.Pattern[str]:
    """A whole output line, with `…` standing for any text."""
    return re.compile("^" + ".*".join(re.escape(p) for p in expected.split("…")) + "$")


def mismatches(cmds: list[Command], stdout: str) -> list[str]:
    """Expected lines the run did not print where the page says (empty when all match)."""
    problems = []
    rest = stdout.splitlines()
    for i, cmd in enumerate(cmds):
        if not cmd.expected:
            continue
        mark = MARK.format(i)
        if mark not in rest:
            problems.append(f"{cmd.lines[0][:60]!r}: did not finish (no {mark})")
            break
        printed, rest = rest[: rest.index(mark)], rest[rest.index(mark) + 1 :]
        at = 0
        for want in cmd.expected:
            rx = pattern(want)
            hit = next((j for j in range(at, len(printed)) if rx.match(printed[j].rstrip())), None)
            if hit is None:
                problems.append(
                    f"{cmd.lines[0][:60]!r} should print {want!r}; it printed:\n  "
                    + "\n  ".join(printed[at:] or ["(nothing more)"])
                )
                break
            at = hit + 1
    return problems

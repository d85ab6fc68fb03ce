"""The validation rule language: what it computes, and that hostile rules are refused at
load with the field named (Hypothesis generates them)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepipe.config import ConfigError, parse_config
from edgepipe.expressions import FUNCTIONS, ExpressionError, parse

DETS = np.array([[0, 0, 10, 10, 0.95, 0], [5, 5, 9, 9, 0.40, 1]], np.float32)


@pytest.mark.parametrize(
    ("rule", "outputs", "holds"),
    [
        ("any(detections[:, 4] > 0.9)", {"detections": DETS}, True),
        ("any(detections[:, 4] > 0.9)", {"detections": DETS[1:]}, False),
        ("count(detections) == 0", {"detections": np.zeros((0, 6), np.float32)}, True),
        ("max(detections[:, 4]) < 0.5 or count(detections) > 10", {"detections": DETS}, False),
        ("not any(isnan(y))", {"y": np.array([1.0, np.nan])}, False),
        ("all(isfinite(y))", {"y": np.array([1.0, 2.0])}, True),
        ("0 <= mean(y) <= 1", {"y": np.array([0.2, 0.4])}, True),
        ("y[0, -1] - y[0, 0] > 1", {"y": np.array([[1.0, 5.0]])}, True),
        ("y[5] > 0", {"y": np.array([1.0])}, False),  # out of range: does not hold
        ("sum(y) / 0 > 1", {"y": np.array([1.0])}, False),
        ("y > 0", {"y": np.array([1.0, -1.0])}, False),  # arrays hold when all hold
    ],
)
def test_rules_compute_over_outputs(rule: str, outputs: dict, holds: bool) -> None:
    assert parse(rule).holds(outputs) is holds


HOSTILE = [
    "y.__class__",
    "y.__class__.__mro__[1].__subclasses__()",
    "__import__('os').system('true')",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('1')",
    "getattr(y, 'T')",
    "(lambda: 1)()",
    "[x for x in y]",
    "{x for x in y}",
    "y ** 10 ** 10",
    "max(y, key=len)",
    "max(*y)",
    "'a' * 10",
    "b'x'",
    "y if y else y",
    "(z := y)",
    "y[y]",
    "_private > 0",
    "y; import os",
    "f'{y}'",
    "await y",
    "y @ y",
    "~y",
    "y << 2",
    "y in y",
    "y is None",
    "True",
    "{'a': 1}",
    "count",
    "max > 1",
]


@pytest.mark.parametrize("rule", HOSTILE)
def test_hostile_rules_are_refused(rule: str) -> None:
    with pytest.raises(ExpressionError):
        parse(rule)


def pipeline_with(rule: str) -> dict:
    return {
        "name": "p",
        "steps": [{"model": {"name": "m", "path": "/m.onnx"}}],
        "validations": [{"name": "ok", "expr": "count(y) > 0"}, {"name": "bad", "expr": rule}],
    }


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(HOSTILE),
    st.sampled_from(["", " ", "y + ", "not ", "any("]),
    st.sampled_from(["", " ", ")", " and y > 0", " or max(y) < 1"]),
)
def test_hostile_rules_anywhere_in_a_rule_fail_the_config_naming_the_field(
    hostile: str, before: str, after: str
) -> None:
    """Wrapped in legitimate rule text or not, a hostile part never gets past load."""
    with pytest.raises(ConfigError) as err:
        parse_config(pipeline_with(before + hostile + after))
    assert err.value.field == "validations[1].expr"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_either_parses_into_the_language_or_is_refused(text: str) -> None:
    """Whatever the text, parse refuses it with ExpressionError or yields a rule whose
    evaluation cannot raise (a rule never fails a request)."""
    try:
        rule = parse(text)
    except ExpressionError:
        return
    outputs = dict.fromkeys(rule.names, np.array([[1.0, 2.0], [3.0, np.nan]]))
    assert rule.holds(outputs) in (True, False)
    assert not any(name.startswith("_") for name in rule.names)


def test_only_whitelisted_functions() -> None:
    assert set(FUNCTIONS) == {
        "any", "all", "max", "min", "mean", "sum", "count", "abs", "isnan", "isfinite",
    }  # fmt: skip

"""Operator settings from env: defaults, overrides, and errors that name the variable."""

from __future__ import annotations

import pytest
from edgepipe_operator.settings import OperatorSettings


def test_defaults_and_overrides() -> None:
    s = OperatorSettings.from_env({})
    assert (s.workers, s.probe_engines, s.namespace) == (8, True, None)
    s = OperatorSettings.from_env(
        {"EDGEPIPE_OPERATOR_WORKERS": "3", "EDGEPIPE_OPERATOR_PROBE_ENGINES": "false"}
    )
    assert (s.workers, s.probe_engines) == (3, False)


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_bad_workers_name_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match=r"EDGEPIPE_OPERATOR_WORKERS=.*at least 1"):
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_WORKERS": value})


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_edge_poll_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match=r"EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS=.*positive"):
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS": value})
    assert (
        OperatorSettings.from_env({"EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS": "2.5"}).edge_poll_seconds
        == 2.5
    )

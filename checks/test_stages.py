"""The deployment stages, reported as tests so that a failed stage is a failed test case with its reason."""

from __future__ import annotations

import pytest

from plugins.record import RunRecord
from plugins.stages import REPORTED_WITH, STAGES, stage_result


@pytest.mark.stage
@pytest.mark.parametrize("name", STAGES)
def test_stage(name: str, request: pytest.FixtureRequest, run_record: RunRecord) -> None:
    request.getfixturevalue(f"stage_{name}")
    assert stage_result(run_record, name) is not None, f"stage {name} left no record"
    for stage_name in (name, *REPORTED_WITH.get(name, ())):
        stage = stage_result(run_record, stage_name)
        if stage is not None and stage.outcome == "failed":
            evidence = f"\n\n{stage.evidence}" if stage.evidence else ""
            pytest.fail(f"stage {stage_name} failed: {stage.reason}{evidence}", pytrace=False)

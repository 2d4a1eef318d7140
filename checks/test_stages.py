"""The deployment stages, reported as tests so that a failed stage is a failed test case with its reason.

Each test asks for its own stage's fixture (fixtures/stages.py), so the stage graph is pytest's own: what
``--setup-plan`` shows. A mode that does not run a stage deselects its test.
"""

from __future__ import annotations

import pytest

from deploycheck.deployment import StageResult


@pytest.mark.stage("preflight")
def test_preflight(stage_preflight: StageResult[None]) -> None:
    stage_preflight.report()


@pytest.mark.stage("images")
def test_images(stage_images: StageResult[object]) -> None:
    stage_images.report()


@pytest.mark.stage("backup")
def test_backup(stage_backup: StageResult[object]) -> None:
    stage_backup.report()


@pytest.mark.stage("rehearsal")
def test_rehearsal(stage_rehearsal: StageResult[None]) -> None:
    stage_rehearsal.report()


@pytest.mark.stage("database")
def test_database(stage_database: StageResult[None]) -> None:
    stage_database.report()


@pytest.mark.stage("citus")
def test_citus(stage_citus: StageResult[None]) -> None:
    stage_citus.report()


@pytest.mark.stage("migrations")
def test_migrations(stage_migrations: StageResult[None]) -> None:
    stage_migrations.report()


@pytest.mark.stage("services")
def test_services(stage_services: StageResult[None]) -> None:
    stage_services.report()


@pytest.mark.stage("proxy")
def test_proxy(stage_proxy: StageResult[None]) -> None:
    stage_proxy.report()


@pytest.mark.stage("restore_backup")
def test_restore_backup(stage_restore_backup: StageResult[None]) -> None:
    stage_restore_backup.report()


@pytest.mark.stage("teardown")
def test_teardown(stage_teardown: StageResult[None]) -> None:
    stage_teardown.report()

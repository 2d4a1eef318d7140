"""Commands as data: what Compose's dry run says would change, read without running anything."""

from __future__ import annotations

from plugins.commands import dry_run_changes

UNCHANGED = """\
 DRY-RUN MODE -  Container p-coordinator-1  Running
 DRY-RUN MODE -  Container p-nginx-1  Running
 DRY-RUN MODE -  Container p-api-1  Running
"""

CHANGED = """\
 DRY-RUN MODE -  Container p-api-1  Recreate
 DRY-RUN MODE -  Container p-nginx-1  Running
 DRY-RUN MODE -  Container p-api-1  Recreated
 DRY-RUN MODE -  Container p-worker-2-1  Starting
"""


def test_a_stack_left_as_it_is_has_no_change() -> None:
    assert dry_run_changes(UNCHANGED) == []
    assert dry_run_changes("") == []


def test_a_recreated_or_started_container_is_a_change() -> None:
    assert dry_run_changes(CHANGED) == [
        "Container p-api-1  Recreate",
        "Container p-api-1  Recreated",
        "Container p-worker-2-1  Starting",
    ]

"""The database answers a real query, in the database the stack uses (a Citus coordinator or a PostgreSQL
server alike)."""

from __future__ import annotations

import psycopg
import pytest

from deploycheck.stack import Stack

pytestmark = pytest.mark.evidence("database")


@pytest.mark.smoke
def test_the_database_answers_a_query(database: psycopg.Connection[tuple[object, ...]], stack: Stack) -> None:
    row = database.execute("SELECT current_database(), current_user, 1 + 1").fetchone()
    expected = stack.environment.stack.database
    assert row == (expected.name, expected.user, 2), row

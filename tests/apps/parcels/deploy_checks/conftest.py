"""parcels' own deploy checks: fixtures over deploycheck's (``stack``, ``http``, ``database``, ``host``,
pytest-docker's ``docker_services``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from deploycheck.stack import Stack


@pytest.fixture(scope="session")
def tracker_api(stack: Stack) -> Iterator[requests.Session]:
    """The tracker through the edge, with the API key its writes need."""
    with requests.Session() as session:
        session.headers["X-Parcels-Key"] = stack.environment.secret("api_key").reveal()
        yield session


@pytest.fixture(scope="session")
def edge_api(stack: Stack) -> str:
    return stack.url("tracker", "proxy")


@pytest.fixture
def created_parcels(database) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Ids of the parcels a check creates, deleted after it (with their scans): checks leave no rows."""
    ids: list[int] = []
    yield ids
    if ids:
        with database.transaction():
            database.execute("DELETE FROM scans WHERE parcel_id = ANY(%s)", (ids,))
            database.execute("DELETE FROM parcels WHERE id = ANY(%s)", (ids,))

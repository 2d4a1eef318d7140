"""parcels after a deploy: a parcel and its scan go through the edge and come back whole; the data is laid out
as the tracker expects on either database; the containers run as built."""

from __future__ import annotations

import pytest
import requests

from deploycheck.stack import Stack

TIMEOUT = 10


def test_parcel_round_trip_through_the_edge(  # type: ignore[no-untyped-def]
    tracker_api: requests.Session, edge_api: str, created_parcels: list[int], writes_refused: bool, database
) -> None:
    """A parcel and its scan through the edge. While deploycheck's write fence refuses the tracker's writes (a
    deploy that applies migrations, until its verdict), the tracker must refuse them, and the parcel it reads
    back is written with deploycheck's own session instead."""
    created = tracker_api.post(f"{edge_api}/parcels", json={"recipient": "Ada", "city": "Lyon"}, timeout=TIMEOUT)
    assert created.headers["X-Served-By"] == "parcels-edge"
    if writes_refused:
        assert not 200 <= created.status_code < 300, f"a write was accepted under the fence: {created.text[:300]}"
        parcel = database.execute(
            "INSERT INTO parcels (recipient, city) VALUES ('Ada', 'Lyon') RETURNING id"
        ).fetchone()
        created_parcels.append(parcel[0])
        database.execute("INSERT INTO scans (parcel_id, location) VALUES (%s, 'Lyon hub')", (parcel[0],))
        parcel = {"id": parcel[0]}
    else:
        assert created.status_code == 201, created.text[:300]
        parcel = created.json()
        created_parcels.append(parcel["id"])

    read = tracker_api.get(f"{edge_api}/parcels/{parcel['id']}", timeout=TIMEOUT)
    assert read.status_code == 200, read.text[:300]
    assert {k: read.json().get(k) for k in ("recipient", "city")} == {"recipient": "Ada", "city": "Lyon"}

    if not writes_refused:
        scan = tracker_api.post(
            f"{edge_api}/parcels/{parcel['id']}/scans", json={"location": "Lyon hub"}, timeout=TIMEOUT
        )
        assert scan.status_code == 201, scan.text[:300]
    scans = tracker_api.get(f"{edge_api}/parcels/{parcel['id']}/scans", timeout=TIMEOUT).json()
    assert [s["location"] for s in scans] == ["Lyon hub"]


@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_unknown_parcel_is_the_trackers_own_404(service_http, via: str) -> None:  # type: ignore[no-untyped-def]
    response = service_http("tracker", via).get("/parcels/987654321", timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json() == {"detail": "parcel 987654321 not found"}


def test_parcels_and_scans_are_colocated_on_citus(stack: Stack, database) -> None:  # type: ignore[no-untyped-def]
    if stack.environment.database.kind != "citus":
        pytest.skip("not applicable: parcels runs on PostgreSQL here")
    rows = database.execute(
        "SELECT logicalrelid::text, colocationid FROM pg_dist_partition "
        "WHERE logicalrelid IN ('parcels'::regclass, 'scans'::regclass) ORDER BY 1"
    ).fetchall()
    assert [name for name, _ in rows] == ["parcels", "scans"]
    assert rows[0][1] == rows[1][1], f"parcels and scans are not colocated: {rows}"


def test_tracker_runs_as_its_own_user(host) -> None:  # type: ignore[no-untyped-def]
    """testinfra inside the tracker's container."""
    tracker = host("tracker")
    assert tracker.check_output("id -u") == "10100"
    assert tracker.file("/srv/tracker/parcels_tracker/web.py").exists


def test_edge_is_published_where_pytest_docker_finds_it(docker_services, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """pytest-docker's view of the deployed stack: the edge's published port answers its ping."""
    port = docker_services.port_for("edge", 8080)
    response = requests.get(f"http://{stack.address('edge', 8080)[0]}:{port}/edge-ping", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == "pong"

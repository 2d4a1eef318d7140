"""The reference app's write-then-read probe, run in the background; its assertions are its check's (pytest
rewrites this module's asserts)."""

from __future__ import annotations

import contextlib
import uuid

import psycopg
import requests

from deploycheck.stack import Stack, StackSession

Connection = psycopg.Connection[tuple[object, ...]]

HTTP_TIMEOUT = 10


ORDERS = (("tea", 250), ("cake", 475))


def write_then_read(stack: Stack, base_url: str, writes_refused: bool) -> None:
    """A store and two orders written through the API at base_url, read back, and found in the workers' shards,
    not on the coordinator; then deleted, whatever happened (a check leaves nothing in the live database). While
    the database refuses writes (``writes_refused``: a deploy's write fence), the API must refuse the write with
    503 and Retry-After, and the rows it reads back are written by deploycheck's own session instead."""
    name = f"probe-{uuid.uuid4().hex[:8]}"  # the probe's rows are found by it, to be deleted
    with StackSession() as http, stack.connect() as conn:
        # Revealed into the session's headers only, never a local that --showlocals would show.
        http.headers["Authorization"] = f"Bearer {stack.environment.secret('api_token').reveal()}"
        try:
            store_id = _round_trip(http, conn, base_url, name, writes_refused)
        except BaseException:
            with contextlib.suppress(psycopg.Error):  # the probe's own failure is what its check must say
                remove_probe_rows(conn, name)
            raise
        remove_store(conn, store_id)


def remove_probe_rows(conn: Connection, name: str) -> None:
    """Delete the store named ``name`` and its orders (deploycheck's own session: it writes under the fence).
    Finding it by name asks every shard of ``stores`` (a connection to every worker): for a probe cut short,
    whose store's id may never have come back."""
    ids = [int(str(row[0])) for row in conn.execute("SELECT id FROM stores WHERE name = %s", (name,)).fetchall()]
    for store_id in ids:
        remove_store(conn, store_id)


def remove_store(conn: Connection, store_id: int) -> None:
    """Delete a store and its orders by the distribution column: one shard's worker, in one transaction."""
    with conn.transaction():
        conn.execute("DELETE FROM orders WHERE store_id = %s", (store_id,))
        conn.execute("DELETE FROM stores WHERE id = %s", (store_id,))


def _round_trip(http: requests.Session, conn: Connection, base_url: str, name: str, writes_refused: bool) -> int:
    """The round trip; the id of the store it made."""
    store = http.post(f"{base_url}/stores", json={"name": name}, timeout=HTTP_TIMEOUT)
    if writes_refused:
        assert store.status_code == 503 and "read-only" in store.text, store.text
        assert store.headers.get("Retry-After", "").isdigit(), f"no Retry-After: {dict(store.headers)}"
        row = conn.execute("INSERT INTO stores (name) VALUES (%s) RETURNING id", (name,)).fetchone()
        assert row is not None
        store_id = int(str(row[0]))
        for item, cents in ORDERS:
            conn.execute(
                "INSERT INTO orders (store_id, item, amount_cents) VALUES (%s, %s, %s)", (store_id, item, cents)
            )
    else:
        assert store.status_code == 201, store.text
        store_id = int(store.json()["id"])
        for item, cents in ORDERS:
            order = http.post(
                f"{base_url}/stores/{store_id}/orders",
                json={"item": item, "amount_cents": cents},
                timeout=HTTP_TIMEOUT,
            )
            assert order.status_code == 201, order.text
    orders = http.get(f"{base_url}/stores/{store_id}/orders", timeout=HTTP_TIMEOUT).json()
    assert [(o["item"], o["amount_cents"]) for o in orders] == [("tea", 250), ("cake", 475)]
    summary = http.get(f"{base_url}/stores/{store_id}/summary", timeout=HTTP_TIMEOUT).json()
    assert (summary["orders"], summary["total_cents"]) == (2, 725)
    # The store's shard, where Citus routed its rows, asked on its worker (one connection, where counting in
    # every placement made each probe connect to every worker).
    placement = conn.execute(
        "SELECT n.nodename, n.nodeport, shard_name('orders'::regclass, p.shardid)"
        " FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)"
        # A scalar subquery: asked once, where in the WHERE clause the (volatile) function ran for every
        # placement row of every table (128 calls, ~0.26 s of the coordinator's CPU per run of the checks).
        " WHERE p.shardid = (SELECT get_shard_id_for_distribution_column('orders', %s))",
        (store_id,),
    ).fetchall()
    assert len(placement) == 1, f"the shard of store {store_id} has placements {placement}"
    node, port, shard = placement[0]
    in_shard = conn.execute(
        "SELECT success, result FROM master_run_on_worker(ARRAY[%s], ARRAY[%s], ARRAY[%s], false)",
        (node, port, f"SELECT count(*) FROM {shard} WHERE store_id = {store_id}"),
    ).fetchone()
    assert in_shard == (True, "2"), f"shard {shard} on {node}:{port} holds {in_shard} orders of store {store_id}"
    return store_id

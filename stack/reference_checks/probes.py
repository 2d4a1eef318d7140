"""The reference app's write-then-read probe, run in the background; its assertions are its check's (pytest
rewrites this module's asserts)."""

from __future__ import annotations

import uuid

import requests

from deploycheck.stack import Stack

HTTP_TIMEOUT = 10


def write_then_read(stack: Stack, base_url: str) -> None:
    """A store and two orders written through the API at base_url, read back, and found in the workers' shards,
    not on the coordinator."""
    token = stack.environment.secret("api_token").reveal()
    with requests.Session() as http, stack.connect() as conn:
        http.headers["Authorization"] = f"Bearer {token}"
        store = http.post(f"{base_url}/stores", json={"name": f"probe-{uuid.uuid4().hex[:8]}"}, timeout=HTTP_TIMEOUT)
        assert store.status_code == 201, store.text
        store_id = int(store.json()["id"])
        for item, cents in (("tea", 250), ("cake", 475)):
            order = http.post(
                f"{base_url}/stores/{store_id}/orders", json={"item": item, "amount_cents": cents}, timeout=HTTP_TIMEOUT
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

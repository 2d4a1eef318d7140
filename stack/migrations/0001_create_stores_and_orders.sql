-- 0001: the tenant-sharded domain of the demo API: stores and their orders, both distributed
-- by store id and colocated, so every statement the API runs (all filter by store id) is routed
-- to a single shard group.
--
-- Applied by deploycheck's migrations stage in one transaction; the stage keeps the version table.
--
-- Constraints are deliberately minimal. On real Citus a primary key or unique constraint must
-- include the distribution column (PRIMARY KEY (id) on stores, PRIMARY KEY (store_id, id) on
-- orders would be valid), but the offline Citus stand-in may not support indexes on distributed
-- tables, so none are declared here; a later migration can add them where real Citus runs.
-- For the same reason there is no foreign key from orders to stores: the API checks that the
-- store exists before inserting an order.

CREATE TABLE stores (
    id bigserial,
    name text NOT NULL,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE orders (
    id bigserial,
    store_id bigint NOT NULL,
    item text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

SELECT create_distributed_table('stores', 'id');
SELECT create_distributed_table('orders', 'store_id', colocate_with => 'stores');

-- 0002: the keys 0001 could not declare while the stack ran on an emulation of Citus. On Citus a primary key
-- must include the distribution column, and a foreign key between distributed tables must be between
-- colocated tables and include it: stores by id, orders by (store_id, id), and orders -> stores.
ALTER TABLE stores ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (store_id, id);
ALTER TABLE orders ADD CONSTRAINT orders_store_fk FOREIGN KEY (store_id) REFERENCES stores (id);

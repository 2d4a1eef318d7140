-- 0001 (Citus): parcels and their scans, both distributed by the parcel id and colocated, so every
-- statement of the tracker (all filter on the parcel id) is routed to one shard group. Primary keys
-- include the distribution column, as Citus requires.
-- depots is a small coordinator-local table (not distributed) kept by the operations team.
-- Apply as one transaction:  psql -X -v ON_ERROR_STOP=1 -1 -f 0001_parcels_and_scans.sql

CREATE TABLE parcels (
    id bigserial PRIMARY KEY,
    recipient text NOT NULL,
    city text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE scans (
    parcel_id bigint NOT NULL REFERENCES parcels (id),
    id bigserial,
    location text NOT NULL,
    scanned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parcel_id, id)
);

CREATE TABLE depots (
    code text PRIMARY KEY,
    city text NOT NULL
);

SELECT create_distributed_table('parcels', 'id');
SELECT create_distributed_table('scans', 'parcel_id', colocate_with => 'parcels');

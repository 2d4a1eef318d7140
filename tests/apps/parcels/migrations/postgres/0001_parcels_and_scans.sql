-- 0001 (PostgreSQL): parcels, their scans and the depots.
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

-- 0002 (Citus): indexes for the lookups the tracker and the support team run (created on every shard),
-- and the depots' opening hour.
-- Not CONCURRENTLY: the file is applied in one transaction (psql -1).
-- The ADD COLUMN is on depots (coordinator-local); 0003 changes a distributed table.

CREATE INDEX parcels_city_idx ON parcels (city);
CREATE INDEX scans_parcel_scanned_at_idx ON scans (parcel_id, scanned_at);

ALTER TABLE depots ADD COLUMN opens_at time NOT NULL DEFAULT '08:00';

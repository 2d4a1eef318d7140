-- 0002 (PostgreSQL): indexes for the lookups the tracker and the support team run, and the depots'
-- opening hour. Not CONCURRENTLY: the file is applied in one transaction (psql -1).

CREATE INDEX parcels_city_idx ON parcels (city);
CREATE INDEX scans_parcel_scanned_at_idx ON scans (parcel_id, scanned_at);

ALTER TABLE depots ADD COLUMN opens_at time NOT NULL DEFAULT '08:00';

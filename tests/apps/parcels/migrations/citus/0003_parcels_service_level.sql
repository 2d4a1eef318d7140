-- 0003: ALTER TABLE ... ADD COLUMN on a distributed table, which Citus propagates to every shard.

ALTER TABLE parcels ADD COLUMN service_level text NOT NULL DEFAULT 'standard';
CREATE INDEX parcels_service_level_idx ON parcels (service_level);

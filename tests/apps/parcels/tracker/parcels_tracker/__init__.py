"""parcels tracker: registers parcels and records their scans (PostgreSQL or Citus behind it)."""

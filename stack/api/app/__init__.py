"""deploycheck demo API: a small tenant-sharded domain on Citus."""

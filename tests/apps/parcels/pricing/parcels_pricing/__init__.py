"""parcels pricing: shipping quotes by weight (stateless)."""

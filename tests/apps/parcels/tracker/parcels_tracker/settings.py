"""Settings, read once from the environment.

PARCELS_DB_HOST, PARCELS_DB_PORT (5432), PARCELS_DB_NAME (parcels), PARCELS_DB_USER (parcels),
PARCELS_DB_PASSWORD, PARCELS_API_KEY (required for writes), PARCELS_BUILD (shown by /about).
Secrets are kept out of repr() so they cannot end up in a log line by accident.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    db_password: str = field(repr=False)
    api_key: str = field(repr=False)
    build: str
    connect_timeout_s: int = 3
    statement_timeout_ms: int = 5000
    pool_max: int = 4


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise SystemExit(f"PARCELS_DB_PORT must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise SystemExit(f"PARCELS_DB_PORT must be between 1 and 65535, got {port}")
    return port


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    return Settings(
        db_host=e.get("PARCELS_DB_HOST", "").strip(),
        db_port=_port(e.get("PARCELS_DB_PORT", "").strip() or "5432"),
        db_name=e.get("PARCELS_DB_NAME", "").strip() or "parcels",
        db_user=e.get("PARCELS_DB_USER", "").strip() or "parcels",
        db_password=e.get("PARCELS_DB_PASSWORD", ""),
        api_key=e.get("PARCELS_API_KEY", ""),
        build=e.get("PARCELS_BUILD", "").strip() or "unknown",
    )

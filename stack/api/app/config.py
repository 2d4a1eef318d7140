"""Settings read once from the environment.

DB_PASSWORD is held in a Secret whose str/repr is masked, so it can't reach a log line,
a response or an error message by accident.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

MASK = "***"


class Secret:
    """A string that never shows itself: str() and repr() are masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    db_password: Secret
    api_token: Secret  # required as a Bearer token on writes when set
    release: str | None
    expected_workers: int | None
    pool_max: int
    connect_timeout: int
    statement_timeout_ms: int

    def describe(self) -> str:
        """One log line, without the password."""
        workers = "any" if self.expected_workers is None else str(self.expected_workers)
        return (
            f"db={self.db_user}@{self.db_host}:{self.db_port}/{self.db_name} "
            f"release={self.release or '-'} expected_workers={workers} pool_max={self.pool_max}"
        )


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}; set it to a number like {minimum}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _password(env: Mapping[str, str]) -> Secret:
    path = env.get("DB_PASSWORD_FILE", "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return Secret(fh.read().rstrip("\r\n"))
        except OSError as exc:
            raise ConfigError(f"DB_PASSWORD_FILE {path!r} cannot be read: {exc.strerror}") from None
    return Secret(env.get("DB_PASSWORD", ""))


def load(env: Mapping[str, str] | None = None) -> Settings:
    e = os.environ if env is None else env
    db_port = _int(e, "DB_PORT", 5432, 1)
    pool_max = _int(e, "DB_POOL_MAX", 5, 1)
    connect_timeout = _int(e, "DB_CONNECT_TIMEOUT", 2, 1)
    statement_timeout_ms = _int(e, "DB_STATEMENT_TIMEOUT_MS", 5000, 1)
    assert db_port is not None and pool_max is not None
    assert connect_timeout is not None and statement_timeout_ms is not None
    return Settings(
        db_host=e.get("DB_HOST", "").strip() or "localhost",
        db_port=db_port,
        db_name=e.get("DB_NAME", "").strip() or "postgres",
        db_user=e.get("DB_USER", "").strip() or "postgres",
        db_password=_password(e),
        api_token=Secret(e.get("API_TOKEN", "")),
        release=e.get("RELEASE", "").strip() or None,
        expected_workers=_int(e, "EXPECTED_WORKERS", None, 0),
        pool_max=pool_max,
        connect_timeout=connect_timeout,
        statement_timeout_ms=statement_timeout_ms,
    )

"""Secrets held by reference: their str/repr is masked, so printing, logging or reporting one shows nothing."""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

MASK = "********"


class Secret:
    """A secret value that masks itself; only ``reveal()`` gives the value, for an environment variable."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source  # where it came from, e.g. "$DEPLOYCHECK_DB_PASSWORD": safe to show

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({self.source}={MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def mask_text(text: str, secrets: list[Secret]) -> str:
    """Replace every secret value in ``text`` (command output, logs) by the mask."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, MASK)
    return text


def from_environment(variable: str) -> Secret | None:
    value = os.environ.get(variable)
    return Secret(value, f"${variable}") if value else None


def generated(variable: str, store: Path) -> Secret:
    """A secret made once for a throwaway environment and kept (mode 0600) so its volumes stay usable."""
    if store.exists():
        return Secret(store.read_text().strip(), f"${variable} (generated, {store})")
    store.parent.mkdir(parents=True, exist_ok=True)
    value = _random.token_urlsafe(24)
    fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return Secret(value, f"${variable} (generated, {store})")

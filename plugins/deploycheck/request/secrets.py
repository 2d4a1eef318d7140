"""Secrets held by reference: their str/repr is masked, so printing, logging or reporting one shows nothing."""

from __future__ import annotations

import contextlib
import html
import json
import os
import secrets as _random
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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


def _forms(value: str) -> list[str]:
    """How a value may be written out: as it is, and escaped as a repr, JSON, HTML (pytest-html puts JSON in an
    HTML attribute), XML (junit) or a URL would escape it."""
    as_json = json.dumps(value)[1:-1]
    forms = [value, repr(value)[1:-1], as_json, html.escape(value), html.escape(as_json), urllib.parse.quote(value)]
    return list(dict.fromkeys(form for form in forms if form))


def _masked_forms(secrets: Iterable[Secret]) -> list[str]:
    """Every form of every secret, longer ones first, so that a secret inside another one leaves none of the
    other behind."""
    return sorted({form for secret in secrets for form in _forms(secret.reveal())}, key=len, reverse=True)


def _replace_forms(text: str, forms: list[str]) -> str:
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def mask_text(text: str, secrets: Iterable[Secret]) -> str:
    """Replace every secret value in ``text`` (command output, logs, reports), in every form it may be written in,
    by the mask."""
    return _replace_forms(text, _masked_forms(secrets))


def mask_data(data: Any, secrets: Iterable[Secret]) -> Any:
    """``data`` (JSON-like: dicts, lists, tuples, strings) with every secret masked in its strings and keys."""
    forms = _masked_forms(secrets)  # once for the whole tree: a report holds hundreds of strings

    def masked(item: Any) -> Any:
        if isinstance(item, str):
            return _replace_forms(item, forms)
        if isinstance(item, dict):
            return {masked(key): masked(value) for key, value in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(masked(each) for each in item)
        return item

    return masked(data)


def _pgpass_line(secret: Secret) -> bytes:
    # libpq's password file: host:port:database:user:password, with ':' and '\' escaped; '*' matches any.
    escaped = secret.reveal().replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n".encode()


@contextlib.contextmanager
def libpq_passfile(secret: Secret) -> Iterator[str]:
    """A password file (mode 0600, in the system's temporary folder) holding ``secret`` for libpq, removed when
    the block ends: a connection is given its path (``passfile=``), never the password, so that no frame of a
    traceback (psycopg's ``connect(**kwargs)``, pytest shows its arguments) can show it. libpq reads the file
    while it connects, inside the block."""
    fd, path = tempfile.mkstemp(prefix="deploycheck-", suffix=".pgpass")
    try:
        try:
            os.write(fd, _pgpass_line(secret))
        finally:
            os.close(fd)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def from_environment(variable: str) -> Secret | None:
    value = os.environ.get(variable)
    return Secret(value, f"${variable}") if value else None


class GeneratedSecretError(ValueError):
    """A generated secret's file cannot be used (empty, unreadable); the message is one sentence with the fix."""


def _private_folder(folder: Path) -> None:
    """Make ``folder`` (mode 0700, whatever the umask) if it is not there; an existing one is left as it is."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        return  # made by another process just now
    os.chmod(folder, 0o700)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_generated(variable: str, store: Path) -> Secret | None:
    """The secret kept in ``store``; None when there is no such file yet."""
    try:
        value = store.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "it is not text"
        raise GeneratedSecretError(
            f"the generated secret {store} (for ${variable}) cannot be read ({why}): fix its permissions, or "
            "delete it to make a new one, knowing that data volumes made with the old one will refuse the new one."
        ) from None
    if not value:
        raise GeneratedSecretError(
            f"the generated secret {store} (for ${variable}) is empty: delete it to make a new one, knowing that "
            "data volumes made with the old one will refuse the new one (remove them too, or put the old value back)."
        )
    return Secret(value, f"${variable} (generated, {store})")


def generated(variable: str, store: Path) -> Secret:
    """A secret made once for a throwaway environment and kept so its volumes stay usable.

    The file is made mode 0600 in a folder made 0700. It appears whole or not at all (written and flushed
    under a temporary name, then linked to its name), so a crash or a second process generating at the same
    moment can never leave it empty; an empty or unreadable one raises ``GeneratedSecretError``.
    """
    existing = _read_generated(variable, store)
    if existing is not None:
        return existing
    folder = store.parent
    _private_folder(folder)
    temporary = folder / f".{store.name}.{os.getpid()}.{_random.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (_random.token_urlsafe(24) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made it first: its secret stays
            os.link(temporary, store)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(folder)
    made = _read_generated(variable, store)
    if made is None:
        raise GeneratedSecretError(
            f"the generated secret {store} (for ${variable}) vanished as it was made: make sure nothing else "
            "deletes files in its folder, and run again."
        )
    return made

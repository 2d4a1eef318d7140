"""The release ledger of an environment: every deploy's release, its images and outcome, and which is current;
and the actions taken on the stack by hand (a teardown, a backup, a restore of a named backup).

It lives in ``.deploycheck/ENV/ledger.json`` and survives between runs. Every write goes to a temporary file
that is flushed to disk and then renamed over the ledger (and the rename flushed too), so a run killed or a
machine that loses power mid-write leaves the previous ledger intact, and a write that returned survives.

Every read checks the whole file's shape: a ledger that is empty, cut short, not JSON or not shaped as deploycheck
writes it raises ``LedgerDamaged`` (one sentence: which file, what is wrong, how to fix it), never a KeyError or
a TypeError from deep inside a deploy, and nothing is written over it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("in progress", "passed", "failed", "interrupted")
# What a run by hand did to the stack (``Action.action``); a teardown that passed leaves no release current.
ACTIONS = ("teardown", "backup", "restore-backup")
FIX = "restore it from a backup of the state folder or move it aside to start a new history"


class LedgerError(Exception):
    """The ledger cannot be used; the message is one sentence that says which file, why, and how to fix it."""


class LedgerDamaged(LedgerError):
    """The ledger's content is not a ledger (empty, cut short, not JSON, mis-shaped)."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"the release ledger {path} is damaged ({what}): {FIX}.")
        self.path = path
        self.what = what


class LedgerUnreadable(LedgerError):
    """The ledger exists but cannot be read (permissions, a folder in its place)."""


@dataclass
class Release:
    id: str
    started_at: float
    images: dict[str, str]  # service -> the image it runs, pinned to its id (deploycheck/pinned:ID)
    image_ids: dict[str, str]  # service -> image id: what a rollback must find running again
    citus_image: str  # the Citus image the release resolved ("" without Citus)
    # The release's whole Compose model (``Compose.snapshot``: images pinned, secrets left as ${...}), so a
    # rollback brings back its configuration as well as its images.
    configuration: str = ""
    build_digests: dict[str, str] = field(default_factory=dict)  # built service -> its build context's digest
    migrations: list[str] = field(default_factory=list)
    outcome: str = "in progress"  # in progress | passed | failed | interrupted
    finished_at: float = 0.0


def _kind(value: object) -> str:
    """A JSON value's kind, in the words of the JSON file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_names(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


# Each field of a release entry: whether it must be there, what it must be, and that in words.
_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "id": (True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "started_at": (True, _is_number, "a number"),
    "images": (True, _is_names, "an object of strings"),
    "image_ids": (True, _is_names, "an object of strings"),
    "citus_image": (True, lambda v: isinstance(v, str), "a string"),
    "configuration": (False, lambda v: isinstance(v, str), "a string"),
    "build_digests": (False, _is_names, "an object of strings"),
    "migrations": (False, lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v), "a list of strings"),
    "outcome": (False, lambda v: v in OUTCOMES, "one of " + ", ".join(f"'{o}'" for o in OUTCOMES)),
    "finished_at": (False, _is_number, "a number"),
}


@dataclass
class Action:
    """One action on the stack by hand: what, when, on which release, how it ended, the backup it took or
    restored ("" for none), and what else it says (the volumes a teardown kept or purged...)."""

    action: str  # one of ACTIONS
    at: float
    release: str
    outcome: str  # passed | failed
    backup: str = ""
    detail: str = ""


_ACTION_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "action": (True, lambda v: v in ACTIONS, "one of " + ", ".join(f"'{a}'" for a in ACTIONS)),
    "at": (True, _is_number, "a number"),
    "release": (True, lambda v: isinstance(v, str), "a string"),
    "outcome": (True, lambda v: v in ("passed", "failed"), "'passed' or 'failed'"),
    "backup": (False, lambda v: isinstance(v, str), "a string"),
    "detail": (False, lambda v: isinstance(v, str), "a string"),
}


def _entry_problem(which: str, entry: dict[str, Any], fields: dict[str, tuple[bool, Any, str]]) -> str | None:
    for name, (required, valid, words) in fields.items():
        if name not in entry:
            if required:
                return f"{which} has no '{name}'"
        elif not valid(entry[name]):
            return f"{which}: '{name}' is {_kind(entry[name])}, not {words}"
    unknown = sorted(set(entry) - set(fields))
    return f"{which} has an unknown field '{unknown[0]}'" if unknown else None


# What an entry that leaves out an optional field means by it (a ledger written before the field existed).
_DEFAULTS: dict[str, Any] = {
    name: value
    for name, value in asdict(Release(id="", started_at=0.0, images={}, image_ids={}, citus_image="")).items()
    if not _FIELDS[name][0]
}


def problem(data: object) -> str | None:
    """What is wrong with a parsed ledger, in a few words; None when it is shaped as deploycheck writes it."""
    if not isinstance(data, dict):
        return f"it holds {_kind(data)}, not an object with 'current' and 'releases'"
    unknown = sorted(set(data) - {"current", "releases", "actions"})
    if unknown:
        return f"it has an unknown field '{unknown[0]}' beside 'current', 'releases' and 'actions'"
    if "releases" not in data:
        return "it has no 'releases' list"
    releases = data["releases"]
    if not isinstance(releases, list):
        return f"'releases' is {_kind(releases)}, not a list"
    current = data.get("current")
    if current is not None and not (isinstance(current, str) and current):
        return f"'current' is {_kind(current)}, not a release id or null"
    for number, entry in enumerate(releases, start=1):
        if not isinstance(entry, dict):
            return f"release #{number} is {_kind(entry)}, not an object"
        which = f"release #{number}" + (
            f" ('{entry['id']}')" if isinstance(entry.get("id"), str) and entry["id"] else ""
        )
        wrong = _entry_problem(which, entry, _FIELDS)
        if wrong is not None:
            return wrong
    actions = data.get("actions", [])
    if not isinstance(actions, list):
        return f"'actions' is {_kind(actions)}, not a list"
    for number, entry in enumerate(actions, start=1):
        if not isinstance(entry, dict):
            return f"action #{number} is {_kind(entry)}, not an object"
        wrong = _entry_problem(f"action #{number}", entry, _ACTION_FIELDS)
        if wrong is not None:
            return wrong
    return None


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        """The whole ledger, checked; an empty one when there is no file yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"current": None, "releases": []}
        except OSError as error:
            raise LedgerUnreadable(
                f"the release ledger {self.path} cannot be read ({error.strerror}): fix its permissions, or move "
                "aside what is in its place."
            ) from None
        if not raw.strip():
            raise LedgerDamaged(self.path, "it is empty")
        try:
            data: Any = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise LedgerDamaged(self.path, "it is not UTF-8 text") from None
        except RecursionError:
            raise LedgerDamaged(self.path, "it is nested too deep to be a ledger") from None
        except json.JSONDecodeError as error:
            # The parser stopped at the end of the text, or in a string never closed: the file was cut short.
            cut = error.pos >= len(error.doc.rstrip()) or error.msg.startswith("Unterminated string")
            what = "it is cut short" if cut else "it is not valid JSON"
            where = f"line {error.lineno}, column {error.colno}"
            raise LedgerDamaged(self.path, f"{what}: {error.msg.lower()}, {where}") from None
        wrong = problem(data)
        if wrong is not None:
            raise LedgerDamaged(self.path, wrong)
        data.setdefault("current", None)
        for entry in data["releases"]:
            for name, default in _DEFAULTS.items():
                entry.setdefault(name, copy.deepcopy(default))
        result: dict[str, Any] = data
        return result

    def check(self) -> None:
        """Raise ``LedgerDamaged``/``LedgerUnreadable`` now if the ledger is damaged (before a run changes anything)."""
        self._read()

    def _write(self, data: dict[str, Any]) -> None:
        """Replace the ledger with ``data``: on disk once this returns, the old one intact if it does not."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        content = (json.dumps(data, indent=2) + "\n").encode()
        temporary = folder / f".{self.path.name}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        # The rename is an entry of the folder: it is durable once the folder is flushed too.
        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def releases(self) -> list[Release]:
        return [Release(**item) for item in self._read()["releases"]]

    def good(self, release_id: str) -> Release | None:
        """The last green deploy of ``release_id``: what a rollback to it brings back."""
        return next((r for r in reversed(self.releases()) if r.id == release_id and r.outcome == "passed"), None)

    def current(self) -> Release | None:
        """The release that last deployed green (and was not replaced since)."""
        current = self._read().get("current")
        return self.good(current) if current else None

    def start(self, release: Release) -> None:
        data = self._read()
        data["releases"].append(asdict(release))
        self._write(data)

    def finish(self, release_id: str, outcome: str, migrations: list[str], make_current: bool) -> None:
        data = self._read()
        for item in reversed(data["releases"]):
            if item["id"] == release_id and item["outcome"] == "in progress":
                item.update(outcome=outcome, finished_at=time.time())
                item["migrations"] = sorted(set(item.get("migrations", [])) | set(migrations))
                break
        if make_current:
            data["current"] = release_id
        self._write(data)

    def mark_current(self, release_id: str) -> None:
        """A manual rollback made ``release_id`` current again."""
        data = self._read()
        data["current"] = release_id
        self._write(data)

    def actions(self) -> list[Action]:
        """The actions taken on the stack by hand, oldest first."""
        return [Action(**item) for item in self._read().get("actions", [])]

    def record_action(self, action: Action) -> None:
        """Add an action by hand; a teardown that passed leaves no release current: the stack no longer runs
        one (a later deploy of that release is a deploy, never already current)."""
        data = self._read()
        data.setdefault("actions", []).append(asdict(action))
        if action.action == "teardown" and action.outcome == "passed":
            data["current"] = None
        self._write(data)

    def unfinished(self) -> list[str]:
        """Releases whose run ended without saying how: killed outright."""
        return [r.id for r in self.releases() if r.outcome == "in progress"]

    def mark_interrupted(self) -> None:
        data = self._read()
        for item in data["releases"]:
            if item["outcome"] == "in progress":
                item.update(outcome="interrupted", finished_at=time.time())
        self._write(data)

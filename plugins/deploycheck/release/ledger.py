"""The release ledger of an environment: every deploy's release, its images and outcome, and which is current.

It lives in ``.deploycheck/ENV/ledger.json`` and survives between runs; every write replaces the file
atomically, so a run killed mid-write leaves the previous ledger intact.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"current": None, "releases": []}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, self.path)

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

    def unfinished(self) -> list[str]:
        """Releases whose run ended without saying how: killed outright."""
        return [r.id for r in self.releases() if r.outcome == "in progress"]

    def mark_interrupted(self) -> None:
        data = self._read()
        for item in data["releases"]:
            if item["outcome"] == "in progress":
                item.update(outcome="interrupted", finished_at=time.time())
        self._write(data)

"""What one run is asked to do, from pytest's options: which environment, which release, in which mode."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed, Runner
from deploycheck.request.schema import ConfigError

RELEASE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What a person asks for; a deploy of the release that is current and healthy becomes "already-current" when
# its plan finds nothing to change (see ``Deployment.plan``). The last five are the stack's life by hand:
# --teardown, --backup, --restore-backup=NAME, --list-backups, --tenants.
RequestedMode = Literal[
    "deploy", "verify-only", "rollback-to", "teardown", "backup", "restore-backup", "list-backups", "tenants"
]
# The option that asks for each mode but deploy (for messages).
MODE_OPTIONS = {
    "rollback-to": "--rollback-to",
    "verify-only": "--verify-only",
    "teardown": "--teardown",
    "backup": "--backup",
    "restore-backup": "--restore-backup",
    "list-backups": "--list-backups",
    "tenants": "--tenants",
}


@dataclass(frozen=True)
class RunRequest:
    environment: str
    environment_file: Path
    mode: RequestedMode
    release: str
    keep_failed: bool
    citus_source: Path | None = None  # a Citus source release archive, for where the Citus image cannot be had
    no_backup: bool = False  # --teardown --no-backup: no backup first
    purge_volumes: bool = False  # --teardown --purge-volumes: the volumes (the data) go too
    backup_name: str | None = None  # --restore-backup=NAME


def valid_release(given: str, option: str = "--release") -> str:
    if not RELEASE_PATTERN.fullmatch(given):
        raise ConfigError(
            f"{option}={given!r} is not a valid release id: use letters, digits, '.', '_' or '-' (at most 64)."
        )
    return given


def release_from_git(folder: Path, runner: Runner) -> str:
    """The git commit of ``folder`` (12 characters), ``-dirty`` when tracked files changed; ``dev`` outside git."""
    try:
        sha = runner.run(commands.git_revision(folder)).stdout.strip()
        dirty = runner.run(commands.git_tracked_changes(folder)).stdout.strip()
    except CommandFailed:
        return "dev"
    return f"{sha}-dirty" if dirty else sha


def mode_of(asked: dict[str, bool]) -> RequestedMode:
    """The one mode the options ask for (``asked``: mode -> whether its option was given); deploy without any."""
    chosen = [mode for mode in MODE_OPTIONS if asked.get(mode)]
    if len(chosen) > 1:
        first, second = (MODE_OPTIONS[mode] for mode in chosen[:2])
        raise ConfigError(f"{first} and {second} exclude each other: use one of them.")
    return cast(RequestedMode, chosen[0]) if chosen else "deploy"


def teardown_options(mode: RequestedMode, no_backup: bool, purge_volumes: bool) -> None:
    """--no-backup and --purge-volumes say how a teardown goes: with any other mode they are a mistake."""
    for given, option in ((no_backup, "--no-backup"), (purge_volumes, "--purge-volumes")):
        if given and mode != "teardown":
            raise ConfigError(f"{option} applies to --teardown only: add --teardown, or leave {option} out.")

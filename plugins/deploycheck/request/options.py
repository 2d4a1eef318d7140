"""What one run is asked to do, from pytest's options: which environment, which release, in which mode."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed, Runner
from deploycheck.request.schema import ConfigError

RELEASE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What a person asks for; a deploy of the release that is current and healthy becomes "already-current" when
# its plan finds nothing to change (see ``Deployment.plan``).
RequestedMode = Literal["deploy", "verify-only", "rollback-to"]


@dataclass(frozen=True)
class RunRequest:
    environment: str
    environment_file: Path
    mode: RequestedMode
    release: str
    keep_failed: bool
    citus_source: Path | None = None  # a Citus source release archive, for where the Citus image cannot be had


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


def mode_of(verify_only: bool, rollback_to: str | None) -> RequestedMode:
    if rollback_to is not None and verify_only:
        raise ConfigError("--rollback-to and --verify-only exclude each other: use one of them.")
    if rollback_to is not None:
        return "rollback-to"
    return "verify-only" if verify_only else "deploy"

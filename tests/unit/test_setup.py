"""scripts/setup.sh on a bad machine: one clear sentence, a non-zero exit, and nothing changed.

Each case runs a copy of the set-up script in a scratch folder, with the machine made bad for real: a user
that is not root, a PATH without apt-get, a docker client whose engine does not answer, a dockerd that dies
at start, a disk-space requirement larger than the disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the script runs before it can fail; everything else is left out of the restricted PATH.
TOOLS = ["bash", "env", "dirname", "id", "df", "awk", "cat", "seq", "sleep", "mkdir", "nohup", "rm", "sha256sum", "cut"]


@pytest.fixture
def project() -> Iterator[Path]:
    """A copy of what set-up reads, in a folder any user can read (for the non-root case)."""
    directory = Path(tempfile.mkdtemp(prefix="dc-setup-"))
    directory.chmod(0o755)
    (directory / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "setup.sh", directory / "scripts" / "setup.sh")
    shutil.copy2(ROOT / "requirements.lock", directory / "requirements.lock")
    yield directory
    shutil.rmtree(directory)


def fake_bin(directory: Path, *, with_apt: bool, dockerd_dies: bool = False, python: str = sys.executable) -> Path:
    """A bin folder: the real tools set-up needs, a docker client whose engine never answers, optionally apt-get."""
    bin_dir = directory / "fakebin"
    bin_dir.mkdir()
    bin_dir.chmod(0o755)
    for tool in TOOLS + (["apt-get"] if with_apt else []):
        real = shutil.which(tool)
        assert real, f"{tool} is not installed"
        (bin_dir / tool).symlink_to(real)
    (bin_dir / "python3").symlink_to(python)
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    if dockerd_dies:
        (bin_dir / "dockerd").write_text("#!/bin/sh\necho 'failed to start daemon: on purpose' >&2\nexit 1\n")
        (bin_dir / "dockerd").chmod(0o755)
    return bin_dir


def run_setup(project: Path, path: str, *, as_nobody: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    argv = ["bash", str(project / "scripts" / "setup.sh")]
    if as_nobody:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is not installed"
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    environment = {"PATH": path, "HOME": str(project), "DEPLOYCHECK_DOCKERD_LOG": str(project / "dockerd.log"), **env}
    return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=120, check=False)


def assert_one_sentence_and_nothing_changed(
    result: subprocess.CompletedProcess[str], project: Path, words: str
) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("setup: ") and lines[0].endswith("."), lines[0]
    assert words in lines[0], lines[0]
    assert not (project / ".venv").exists() and not (project / ".deploycheck").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the case as another user")
def test_no_docker_and_not_root(project: Path) -> None:
    # The system's Python: another user cannot run the one in root's home.
    bin_dir = fake_bin(project, with_apt=True, python="/usr/bin/python3")
    result = run_setup(project, str(bin_dir), as_nobody=True)
    assert_one_sentence_and_nothing_changed(result, project, "Docker is not running and installing it needs root")


def test_no_docker_and_no_apt(project: Path) -> None:
    bin_dir = fake_bin(project, with_apt=False)
    result = run_setup(project, str(bin_dir))
    assert_one_sentence_and_nothing_changed(result, project, "this machine has no apt-get to install it")


@pytest.mark.skipif(os.geteuid() != 0, reason="the script starts dockerd only as root")
def test_daemon_that_will_not_start(project: Path) -> None:
    bin_dir = fake_bin(project, with_apt=True, dockerd_dies=True)
    result = run_setup(project, str(bin_dir))
    assert_one_sentence_and_nothing_changed(result, project, "dockerd exited at start: read")
    assert "on purpose" in (project / "dockerd.log").read_text()


def test_disk_too_small(project: Path) -> None:
    bin_dir = fake_bin(project, with_apt=True)
    result = run_setup(project, str(bin_dir), DEPLOYCHECK_MIN_FREE_GB="1000000")
    assert_one_sentence_and_nothing_changed(result, project, "GiB is free on the disk holding")
    assert "set-up needs 1000000 GiB" in result.stderr

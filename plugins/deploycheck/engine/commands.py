"""Commands as data, one runner.

Every external command deploycheck runs is built here, as data (``Command``: an argument list, the variables
it needs, its timeout), by the functions below, and run by ``Runner``: on this machine (``run``) or inside a
container through the Docker API (``exec``). The secret policy lives in the runner: secrets travel only in the
child's environment, never on a command line, and any secret value that shows up in output is masked before it
is kept or raised.

A command run on this machine starts in a session of its own: the signals a terminal's Ctrl+C or a CI cancel
send to deploycheck's process group do not reach it, so a ``docker compose`` that a rollback runs (with those
signals ignored by deploycheck meanwhile) finishes its work. The runner ends its children itself: at their
timeout it kills the child's whole process group (``docker compose`` runs its plugin in it), and when
deploycheck itself is interrupted during a command it passes the interrupt on to that group, then kills it
if it has not stopped within ``INTERRUPT_GRACE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
from docker.models.containers import Container

from deploycheck.request.secrets import Secret, mask_text

log = logging.getLogger("deploycheck.commands")

# How long a child interrupted with deploycheck (Ctrl+C, SIGTERM during a stage) has to stop before it is
# killed: what `docker stop` gives a container.
INTERRUPT_GRACE_SECONDS = 10.0
# After its group is killed, how long a child's output pipes may stay open (held by a process that left the
# group) before they are given up.
DRAIN_SECONDS = 5.0


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    """Send ``signum`` to the child's process group (its session: it leads both)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _drain(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What a stopped child wrote; reaps it. Pipes that a process outside its group keeps open are given up."""
    try:
        stdout, stderr = process.communicate(timeout=DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        process.wait()
        return "", ""
    return stdout or "", stderr or ""


def _stop_interrupted(process: subprocess.Popen[str]) -> None:
    """deploycheck was interrupted while ``process`` ran: interrupt its group as the terminal would have, give it
    ``INTERRUPT_GRACE_SECONDS`` to stop, then kill the group (also when a second interrupt cuts the wait short)."""
    try:
        _signal_group(process, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=INTERRUPT_GRACE_SECONDS)
    finally:
        _signal_group(process, signal.SIGKILL)
        _drain(process)


class CommandFailed(Exception):
    """A command exited non-zero or timed out; the message says which and ends with its output (masked)."""

    def __init__(
        self, command: Command, detail: str, described: str | None = None, *, missing_program: bool = False
    ) -> None:
        super().__init__(f"`{described if described is not None else command.describe()}` {detail}")
        self.command = command
        self.missing_program = missing_program  # the program itself is not installed


@dataclass(frozen=True)
class Command:
    """One external command: its arguments, the variables it needs besides ours, its secrets, its deadline."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, Secret] = field(default_factory=dict)
    timeout: float = 600
    user: str = ""  # inside a container: the user to run as ("" = the image's)

    def describe(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class Result:
    command: Command
    returncode: int
    stdout: str  # masked, as everything the runner keeps or raises
    stderr: str
    printed: str = field(default="", repr=False, compare=False)  # stdout as printed, for ``data`` only

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def data(self) -> Any:
        """The JSON the command printed, parsed from its stdout as printed. Masking is for text a person reads:
        in data it would rewrite any name or path a secret's value is part of (a password ``postgres`` in
        ``/var/lib/postgresql``). The caller keeps only fields that hold no secret, and masks any sentence it
        makes of them."""
        return json.loads(self.printed)


def environ_now(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment (or ``environ``) as it is now, read safely from any thread. pytest's main
    thread sets and removes PYTEST_CURRENT_TEST at every phase of every test, and a copy of ``os.environ`` lists
    its keys before it reads them: a background probe's copy could fail with KeyError: 'PYTEST_CURRENT_TEST'
    (seen in a check over SSH). A copy that met such a change is made again."""
    source = os.environ if environ is None else environ
    while True:
        try:
            return dict(source)
        except (KeyError, RuntimeError):  # a key removed, or added, while the copy was made
            continue


class Runner:
    """Runs commands: on this machine with ``env`` added (e.g. DOCKER_HOST), or inside a container.

    ``secrets`` are masked in every output, whether or not the command was given them.
    """

    def __init__(self, env: Mapping[str, str] | None = None, secrets: Sequence[Secret] = ()) -> None:
        self.env = dict(env or {})
        self.secrets = list(secrets)

    def _masked(self, command: Command, text: str) -> str:
        return mask_text(text, [*self.secrets, *command.secret_env.values()])

    def _failed(self, command: Command, detail: str, *, missing_program: bool = False) -> CommandFailed:
        described = self._masked(command, command.describe())
        return CommandFailed(command, self._masked(command, detail), described, missing_program=missing_program)

    def _check(self, result: Result, check: bool) -> Result:
        if check and result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip())[-1500:]
            raise self._failed(result.command, f"exited with {result.returncode}: {output}")
        return result

    def _child_env(self, command: Command) -> dict[str, str]:
        return {
            **environ_now(),
            **self.env,
            **command.env,
            **{key: value.reveal() for key, value in command.secret_env.items()},
        }

    def run(self, command: Command, *, check: bool = True, cwd: Path | None = None, input: str | None = None) -> Result:
        """Run ``command`` on this machine; raise CommandFailed on a non-zero exit when ``check``.

        ``input`` is written to its stdin (then closed); without it, its stdin is empty (it never reads the terminal).
        """
        log.info("run: %s", command.describe())
        try:
            process = subprocess.Popen(
                list(command.argv),
                env=self._child_env(command),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",  # a stray byte in a tool's output must not hide its exit code
                cwd=cwd,
                start_new_session=True,  # out of reach of the signals sent to deploycheck's process group
            )
        except FileNotFoundError:
            raise self._failed(
                command, f"cannot run: {command.argv[0]} is not installed", missing_program=True
            ) from None
        try:
            stdout, stderr = process.communicate(input=input, timeout=command.timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            _drain(process)
            raise self._failed(command, f"did not finish within {command.timeout:.0f} s") from None
        except BaseException:  # Ctrl+C or SIGTERM (as KeyboardInterrupt), or an error, while the child runs
            _stop_interrupted(process)
            raise
        result = Result(
            command, process.returncode, self._masked(command, stdout), self._masked(command, stderr), stdout
        )
        return self._check(result, check)

    def start(self, command: Command, *, capture: bool = False) -> subprocess.Popen[bytes]:
        """Start ``command`` on this machine in the background and return at once (its timeout does not apply).

        It runs in a session of its own, so Ctrl+C in the terminal does not reach it: the caller ends it. Its stdin
        is a pipe the caller holds: closing it, or this process dying for any reason, gives the command an EOF.
        Its stdout and stderr are pipes when ``capture`` (read them, or they fill up), else /dev/null. Its output
        is not masked: use it for commands that print no secrets.
        """
        log.info("start: %s", command.describe())
        output = subprocess.PIPE if capture else subprocess.DEVNULL
        try:
            return subprocess.Popen(
                list(command.argv),
                env=self._child_env(command),
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise self._failed(command, f"cannot run: {command.argv[0]} is not installed") from None

    def exec(self, container: Container, command: Command, *, check: bool = True) -> Result:
        """Run ``command`` inside ``container`` (attached: its exit code and output); CommandFailed as ``run``.

        A container that is gone or stopped is a failed command too (exit code -1), not an engine error.
        """
        environment = {**command.env, **{key: value.reveal() for key, value in command.secret_env.items()}}
        try:
            code, output = container.exec_run(
                list(command.argv), user=command.user, environment=environment or None, demux=True
            )
        except docker.errors.APIError as error:
            return self._check(Result(command, -1, "", self._masked(command, str(error.explanation))), check)
        stdout, stderr = output if isinstance(output, tuple) else (output, b"")
        printed = (stdout or b"").decode(errors="replace")
        errors = (stderr or b"").decode(errors="replace")
        returncode = int(code if code is not None else -1)
        if returncode == EXEC_NOT_STARTED and (_runtime_refused(printed) or _runtime_refused(errors)):
            # The engine's words, not the command's: the container stopped between our look and the exec.
            returncode = -1
        result = Result(command, returncode, self._masked(command, printed), self._masked(command, errors), printed)
        return self._check(result, check)


# The exit code the engine gives an exec whose process its runtime could not start; a command's own 126 (a file
# it cannot execute) comes without the runtime's words, so both are needed.
EXEC_NOT_STARTED = 126


def _runtime_refused(output: str) -> bool:
    """The engine wrote its runtime's refusal into the exec's stream: "OCI runtime exec failed: ...", as when the
    container stopped after the exec was created ("cannot exec in a stopped container")."""
    return output.lstrip().startswith("OCI runtime exec failed")


# --- the commands, on this machine ------------------------------------------------------------------------


def compose_version() -> Command:
    return Command(("docker", "compose", "version", "--short"), timeout=30)


def docker_pull(reference: str, timeout: float) -> Command:
    # The CLI, not the SDK: a registry that does not answer must not hang set-up.
    return Command(("docker", "pull", "-q", reference), timeout=timeout)


def git_revision(folder: Path) -> Command:
    return Command(("git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"), timeout=30)


def git_tracked_changes(folder: Path) -> Command:
    return Command(("git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"), timeout=30)


def compose(
    project: str,
    files: Sequence[Path],
    args: Sequence[str],
    *,
    project_directory: Path,
    env: Mapping[str, str],
    secret_env: Mapping[str, Secret],
    timeout: float,
) -> Command:
    """A ``docker compose`` command of one project; its project directory (where Compose reads ``.env``) is the
    team's, also when the files are a release's snapshot kept elsewhere."""
    file_args = [arg for path in files for arg in ("-f", str(path))]
    argv = ("docker", "compose", "-p", project, "--project-directory", str(project_directory), *file_args, *args)
    return Command(argv, env=env, secret_env=secret_env, timeout=timeout)


# --- the commands, inside a container ---------------------------------------------------------------------


def shell(script: str, *, user: str = "", timeout: float = 600) -> Command:
    """A POSIX shell script inside a container (for a pipeline or a clean-up; its parts are built here)."""
    return Command(("sh", "-c", script), user=user, timeout=timeout)


def pg_basebackup(user: str, target: str) -> Command:
    """A physical backup of the node (WAL included) into ``target`` (emptied first), as ``base.tar``: not
    compressed, as writes may wait for it (3 to 4 x faster than with ``-z``); ``compress_backup`` then."""
    return shell(
        f"rm -rf {target} && pg_basebackup -D {target} -Ft -X fetch -U {user} --checkpoint=fast", user="postgres"
    )


def compress_backup(target: str) -> Command:
    """The backup ``pg_basebackup`` wrote into ``target`` compressed in place: ``base.tar.gz``."""
    return shell(f"gzip -1 {target}/base.tar", user="postgres")


def remove_tree(path: str, user: str = "postgres") -> Command:
    return shell(f"rm -rf {path}", user=user)


def pg_isready(user: str, database: str) -> Command:
    return Command(("pg_isready", "-q", "-U", user, "-d", database), timeout=10)


def psql_files(user: str, database: str, paths: Sequence[str], *, one_transaction: bool = True) -> Command:
    """SQL files run by psql, statement by statement, stopping at the first error; in one transaction unless
    told otherwise."""
    files = [arg for path in paths for arg in ("-f", path)]
    single = ["-1"] if one_transaction else []
    return Command(("psql", "-X", "-q", *single, "-v", "ON_ERROR_STOP=1", "-U", user, "-d", database, *files))


def nginx_config_test() -> Command:
    return Command(("nginx", "-t"), timeout=30)


def http_get_with_headers(url: str, seconds: float = 5) -> Command:
    """curl inside a container: the response's status line and headers, a blank line, then its body."""
    return Command(("curl", "-sS", "--max-time", f"{seconds:g}", "-D", "-", url), timeout=seconds + 5)

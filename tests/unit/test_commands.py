"""Commands as data: the exact argument lists deploycheck runs, the runner's secret policy, the poll helper, and
what Compose's dry run says would change, read without running anything."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from deploycheck.engine import commands
from deploycheck.engine.commands import Command, CommandFailed, Runner
from deploycheck.engine.compose import Compose, dry_run_changes
from deploycheck.engine.polling import poll
from deploycheck.request.secrets import MASK, Secret

UNCHANGED = """\
 DRY-RUN MODE -  Container p-coordinator-1  Running
 DRY-RUN MODE -  Container p-nginx-1  Running
 DRY-RUN MODE -  Container p-api-1  Running
"""

CHANGED = """\
 DRY-RUN MODE -  Container p-api-1  Recreate
 DRY-RUN MODE -  Container p-nginx-1  Running
 DRY-RUN MODE -  Container p-api-1  Recreated
 DRY-RUN MODE -  Container p-worker-2-1  Starting
"""


def test_a_stack_left_as_it_is_has_no_change() -> None:
    assert dry_run_changes(UNCHANGED) == []
    assert dry_run_changes("") == []


def test_a_recreated_or_started_container_is_a_change() -> None:
    assert dry_run_changes(CHANGED) == [
        "Container p-api-1  Recreate",
        "Container p-api-1  Recreated",
        "Container p-worker-2-1  Starting",
    ]


PASSWORD = Secret("s3cret-Pa55", "$DB_PASSWORD")


def compose() -> Compose:
    return Compose(
        project="shop",
        files=(Path("/srv/compose.yaml"), Path("/srv/workers.json")),
        runner=Runner(),
        project_directory=Path("/srv"),
        variables={"RELEASE": "B"},
        secret_variables={"DB_PASSWORD": PASSWORD},
    )


@pytest.mark.parametrize(
    ("build", "argv"),
    [
        (
            lambda c: c.command("up", "--detach", "--no-deps", "--remove-orphans", "api"),
            ["up", "--detach", "--no-deps", "--remove-orphans", "api"],
        ),
        (lambda c: c.command("down", "--remove-orphans"), ["down", "--remove-orphans"]),
        (lambda c: c.command("config", "--no-interpolate"), ["config", "--no-interpolate"]),
    ],
)
def test_compose_commands_name_the_project_and_its_files_and_carry_the_password_in_the_environment_only(
    build: object, argv: list[str]
) -> None:
    command = build(compose())  # type: ignore[operator]
    assert list(command.argv) == [
        "docker",
        "compose",
        "-p",
        "shop",
        "--project-directory",
        "/srv",
        "-f",
        "/srv/compose.yaml",
        "-f",
        "/srv/workers.json",
        *argv,
    ]
    assert command.env == {"RELEASE": "B", "COMPOSE_PROFILES": "citus-workers"}
    assert command.secret_env == {"DB_PASSWORD": PASSWORD}
    assert "s3cret-Pa55" not in " ".join(command.argv) + command.describe()


@pytest.mark.parametrize(
    ("command", "argv", "user"),
    [
        (commands.compose_version(), ["docker", "compose", "version", "--short"], ""),
        (commands.docker_pull("citusdata/citus:13.0", 120), ["docker", "pull", "-q", "citusdata/citus:13.0"], ""),
        (commands.git_revision(Path("/srv")), ["git", "-C", "/srv", "rev-parse", "--short=12", "HEAD"], ""),
        (
            commands.git_tracked_changes(Path("/srv")),
            ["git", "-C", "/srv", "status", "--porcelain", "--untracked-files=no"],
            "",
        ),
        (
            commands.pg_basebackup("app", "/tmp/b"),
            [
                "sh",
                "-c",
                "rm -rf /tmp/b && pg_basebackup -D /tmp/b -Ft -X fetch -U app --checkpoint=fast",
            ],
            "postgres",
        ),
        (commands.compress_backup("/tmp/b"), ["sh", "-c", "gzip -1 /tmp/b/base.tar"], "postgres"),
        (commands.remove_tree("/tmp/b"), ["sh", "-c", "rm -rf /tmp/b"], "postgres"),
        (commands.pg_isready("app", "shop"), ["pg_isready", "-q", "-U", "app", "-d", "shop"], ""),
        (
            commands.psql_files("app", "shop", ["/tmp/m/0002.sql", "/tmp/m/0002.sql.record"]),
            [
                "psql",
                "-X",
                "-q",
                "-1",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "app",
                "-d",
                "shop",
                "-f",
                "/tmp/m/0002.sql",
                "-f",
                "/tmp/m/0002.sql.record",
            ],
            "",
        ),
        (
            commands.psql_files("app", "shop", ["/tmp/m/0003.sql"], one_transaction=False),
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", "shop", "-f", "/tmp/m/0003.sql"],
            "",
        ),
        (commands.nginx_config_test(), ["nginx", "-t"], ""),
        (
            commands.http_get_with_headers("http://127.0.0.1/x"),
            ["curl", "-sS", "--max-time", "5", "-D", "-", "http://127.0.0.1/x"],
            "",
        ),
    ],
)
def test_every_command_is_built_as_data(command: Command, argv: list[str], user: str) -> None:
    assert list(command.argv) == argv
    assert command.user == user


def test_the_runner_gives_secrets_to_the_child_environment_and_masks_them_in_its_output() -> None:
    echo = Command(
        (sys.executable, "-c", "import os, sys; print(os.environ['DB_PASSWORD']); print(sys.argv)"),
        secret_env={"DB_PASSWORD": PASSWORD},
    )
    result = Runner().run(echo)
    assert result.stdout.splitlines()[0] == MASK, "the child had the secret, and its output shows the mask"
    assert "s3cret-Pa55" not in result.stdout + result.stderr


def test_a_failed_command_says_which_and_masks_its_output() -> None:
    fail = Command((sys.executable, "-c", "import sys; print('password=s3cret-Pa55', file=sys.stderr); sys.exit(3)"))
    with pytest.raises(CommandFailed) as failed:
        Runner(secrets=[PASSWORD]).run(fail)
    assert "exited with 3" in str(failed.value) and f"password={MASK}" in str(failed.value)
    assert "s3cret-Pa55" not in str(failed.value)


def test_a_command_that_does_not_finish_in_time_fails() -> None:
    with pytest.raises(CommandFailed, match="did not finish within 1 s"):
        Runner().run(Command(("sleep", "5"), timeout=1))


def test_poll_returns_the_first_answer() -> None:
    answers = iter([None, None, "ready"])
    assert poll(lambda: next(answers), seconds=5, every=0.01, timed_out=lambda: AssertionError("timed out")) == "ready"


def test_poll_stops_at_its_deadline_with_the_error_it_is_given() -> None:
    attempts: list[float] = []
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="never ready"):
        poll(
            lambda: attempts.append(time.monotonic()),
            seconds=0.3,
            every=0.1,
            timed_out=lambda: TimeoutError("never ready"),
        )
    assert 2 <= len(attempts) <= 5 and attempts[-1] - start >= 0.3 - 0.05


def test_an_error_in_an_attempt_is_fatal_at_once() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise ValueError("fatal")

    with pytest.raises(ValueError, match="fatal"):
        poll(attempt, seconds=10, every=0.01, timed_out=lambda: AssertionError("not this"))
    assert calls == [1]


def test_the_runner_gives_a_command_its_input() -> None:
    result = Runner().run(Command((sys.executable, "-c", "import sys; print(sys.stdin.read().upper())")), input="abc")
    assert result.stdout == "ABC\n"


def test_a_started_command_runs_in_a_session_of_its_own_until_its_stdin_ends() -> None:
    script = "import os, sys; print(os.getsid(0) == os.getpid(), flush=True); sys.stdin.read(); print('eof')"
    process = Runner().start(Command((sys.executable, "-c", script)), capture=True)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"True\n"  # its own session: Ctrl+C in the terminal does not reach it
    assert process.poll() is None
    process.stdin.close()
    assert process.wait(timeout=10) == 0
    assert process.stdout.read() == b"eof\n"
    process.stdout.close()
    process.stderr.close()


def test_a_started_command_that_is_not_installed_is_a_failed_command() -> None:
    with pytest.raises(CommandFailed, match="cannot run: no-such-program-dc is not installed"):
        Runner().start(Command(("no-such-program-dc",)))


class ExecContainer:
    """A container whose exec answers as the engine did: its exit code and (stdout, stderr)."""

    def __init__(self, code: int, stdout: bytes, stderr: bytes = b"") -> None:
        self.answer = (code, (stdout, stderr))

    def exec_run(self, command: object, **_: object) -> tuple[int, tuple[bytes, bytes]]:
        return self.answer


def test_an_exec_the_runtime_refused_is_a_failed_command_not_the_commands_verdict() -> None:
    # The engine's answer when the container stopped after it was looked at (a CI run's nginx -t, 2026-12-01).
    refused = ExecContainer(
        126, b"OCI runtime exec failed: exec failed: cannot exec in a stopped container: unknown\r\n"
    )
    result = Runner().exec(refused, Command(("nginx", "-t")), check=False)
    assert result.returncode == -1 and "cannot exec in a stopped container" in result.output
    # A command's own 126 stays its own.
    own = ExecContainer(126, b"", b"sh: 1: ./migrate: Permission denied\n")
    assert Runner().exec(own, Command(("sh", "-c", "./migrate")), check=False).returncode == 126
    rejected = ExecContainer(1, b"", b'nginx: [emerg] unknown directive "x"\n')
    assert Runner().exec(rejected, Command(("nginx", "-t")), check=False).returncode == 1

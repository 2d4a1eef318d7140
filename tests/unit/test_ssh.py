"""The SSH transport without a server: ssh:// addresses, the exact argv of every ssh command, ssh's words turned
into one sentence, and the remote lock's shell script, run here with the local flock."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from deploycheck.engine import ssh
from deploycheck.engine.ssh import SSHConnection, SSHError, parse_destination

USER_ARGS = ["-F", "/home/me/.ssh/deploy_config"]
CONTROL = "/tmp/dc-ssh-x/control"
CLIENT = ["ssh", "-S", CONTROL, "-o", "ControlMaster=no", "-o", "BatchMode=yes"]


@pytest.mark.parametrize(
    ("url", "destination", "args"),
    [
        ("ssh://deploy@db1.example.com:2222", "deploy@db1.example.com", ["-p", "2222"]),
        ("ssh://root@127.0.0.1:47301", "root@127.0.0.1", ["-p", "47301"]),
        ("ssh://db1.example.com", "db1.example.com", []),
        ("ssh://myserver", "myserver", []),  # a Host of the user's ssh config: the rest comes from there
        ("ssh://deploy@myserver/", "deploy@myserver", []),
        ("ssh://ops@[2001:db8::1]:22", "ops@2001:db8::1", ["-p", "22"]),
        ("  ssh://deploy@host:22 ", "deploy@host", ["-p", "22"]),
    ],
)
def test_an_ssh_address_becomes_ssh_s_destination_and_port(url: str, destination: str, args: list[str]) -> None:
    assert parse_destination(url) == (destination, args)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("tcp://127.0.0.1:2375", "is not an SSH address: write it as ssh://user@host:port"),
        ("deploy@host", "is not an SSH address"),
        ("ssh://", "is not an SSH address"),
        ("ssh://deploy:hunter2@host", "has a password in it"),
        ("ssh://deploy@host:22/srv", "has something after the host and port"),
        ("ssh://deploy@host?x=1", "has something after the host and port"),
        ("ssh://deploy@host:99999", "has a port that is not a number from 1 to 65535"),
        ("ssh://deploy@host:0", "has a port that is not a number from 1 to 65535"),
        ("ssh://deploy@host:ssh", "has a port that is not a number from 1 to 65535"),
        ("ssh://deploy@host:", "has a port that is not a number from 1 to 65535"),
        ("ssh://deploy@-oProxyCommand=x", "has no valid host name"),
        ("ssh://deploy@", "has no valid host name"),
        ("ssh://-oProxyCommand=x@host", "has no valid user name"),
        ("ssh://de ploy@host", "has no valid user name"),
    ],
)
def test_a_wrong_ssh_address_is_one_sentence_saying_how_to_write_it(url: str, words: str) -> None:
    with pytest.raises(SSHError) as raised:
        parse_destination(url)
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_destination_that_ssh_would_read_as_an_option_is_refused() -> None:
    with pytest.raises(SSHError, match="is no SSH destination"):
        SSHConnection("-oProxyCommand=touch /tmp/x")


def test_the_master_runs_in_the_foreground_with_no_forwards_of_its_own_and_one_session_watching_its_stdin() -> None:
    command = ssh.master_command("deploy@db1", USER_ARGS, CONTROL, "/tmp/dc-ssh-x/master.log")
    assert list(command.argv) == [
        "ssh",
        "-M",
        "-S",
        CONTROL,
        "-T",
        "-E",
        "/tmp/dc-ssh-x/master.log",
        "-o",
        "ControlPersist=no",
        "-o",
        "RemoteCommand=none",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "StreamLocalBindUnlink=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=3",
        "-F",
        "/home/me/.ssh/deploy_config",
        "--",
        "deploy@db1",
        "exec cat >/dev/null",
    ]


@pytest.mark.parametrize(
    ("operation", "forward", "tail"),
    [
        ("check", (), ["-O", "check"]),
        ("exit", (), ["-O", "exit"]),
        (
            "forward",
            ("-L", "/tmp/dc-ssh-x/docker.sock:/var/run/docker.sock"),
            ["-O", "forward", "-L", "/tmp/dc-ssh-x/docker.sock:/var/run/docker.sock"],
        ),
        (
            "forward",
            ("-L", ssh.local_forward_spec(47311, 8080)),
            ["-O", "forward", "-L", "127.0.0.1:47311:127.0.0.1:8080"],
        ),
        (
            "cancel",
            ("-L", ssh.local_forward_spec(47311, 8080)),
            ["-O", "cancel", "-L", "127.0.0.1:47311:127.0.0.1:8080"],
        ),
        (
            "forward",
            ("-R", ssh.remote_forward_spec(5000, 47350)),
            ["-O", "forward", "-R", "127.0.0.1:5000:127.0.0.1:47350"],
        ),
        (
            "cancel",
            ("-R", ssh.remote_forward_spec(5000, 47350)),
            ["-O", "cancel", "-R", "127.0.0.1:5000:127.0.0.1:47350"],
        ),
    ],
)
def test_every_request_to_the_master_is_a_client_that_never_becomes_a_master_nor_prompts(
    operation: str, forward: tuple[str, ...], tail: list[str]
) -> None:
    command = ssh.control_command("deploy@db1", USER_ARGS, CONTROL, operation, forward)
    assert list(command.argv) == [*CLIENT, *USER_ARGS, *tail, "--", "deploy@db1"]
    assert command.timeout == ssh.CONTROL_TIMEOUT


def test_a_check_of_the_master_has_a_short_deadline() -> None:
    command = ssh.control_command("deploy@db1", (), CONTROL, "check", timeout=ssh.CHECK_TIMEOUT)
    assert command.timeout == 5


def test_forward_specs_bracket_an_ipv6_host() -> None:
    assert ssh.local_forward_spec(47311, 5432, "::1") == "127.0.0.1:47311:[::1]:5432"
    assert ssh.remote_forward_spec(5000, 5000, "::1") == "127.0.0.1:5000:[::1]:5000"


def test_a_command_on_the_server_is_one_quoted_string_after_the_destination_with_stdin_from_dev_null() -> None:
    command = ssh.session_command("deploy@db1", USER_ARGS, CONTROL, ["docker", "ps", "--format", "{{.Names}} x"])
    assert list(command.argv) == [
        *CLIENT,
        "-o",
        "ProxyCommand=false",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "RemoteCommand=none",
        "-T",
        "-n",
        *USER_ARGS,
        "--",
        "deploy@db1",
        "docker ps --format '{{.Names}} x'",
    ]
    assert command.timeout == ssh.COMMAND_TIMEOUT


def test_a_command_given_input_keeps_its_stdin_and_its_own_deadline() -> None:
    command = ssh.session_command("deploy@db1", (), CONTROL, ["-x"], stdin=True, timeout=7)
    assert list(command.argv) == [
        *CLIENT,
        "-o",
        "ProxyCommand=false",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "RemoteCommand=none",
        "-T",
        "--",
        "deploy@db1",
        "-x",
    ]
    assert command.timeout == 7


def test_a_shell_string_is_not_taken_for_a_command() -> None:
    with pytest.raises(TypeError):
        ssh.session_command("deploy@db1", (), CONTROL, "rm -rf /tmp/x")


def test_the_lock_is_taken_by_one_shell_command_with_every_value_as_an_argument() -> None:
    argv = ssh.lock_argv("/var/lib/deploycheck/prod.lock", "host a, pid 1, user 'me'")
    assert argv == [
        "sh",
        "-c",
        'mkdir -p -- "$1" && { flock -n -E 75 -- "$2" sh -c "$5" sh "$3" "$4"; rc=$?; '
        'if [ "$rc" -eq 75 ]; then cat -- "$3" 2>/dev/null; fi; exit "$rc"; }',
        "sh",
        "/var/lib/deploycheck",
        "/var/lib/deploycheck/prod.lock",
        "/var/lib/deploycheck/prod.lock.holder",
        "host a, pid 1, user 'me'",
        'printf "%s\\n" "$2" > "$1" && echo deploycheck-lock-taken && exec cat >/dev/null',
    ]


def _remote(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """The lock's command as sshd would run it: the user's shell given the one string."""
    return subprocess.Popen(["sh", "-c", shlex.join(argv)], **kwargs)  # type: ignore[call-overload, no-any-return]


def test_the_lock_script_holds_the_lock_while_its_stdin_is_open_and_names_its_holder_to_a_second_taker(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "locks" / "it's.lock")
    first = _remote(ssh.lock_argv(path, "host a, pid 1; `rm -rf /`"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline() == b"deploycheck-lock-taken\n"
    second = subprocess.run(["sh", "-c", shlex.join(ssh.lock_argv(path, "b"))], capture_output=True, timeout=10)
    assert (second.returncode, second.stdout) == (ssh.LOCK_BUSY, b"host a, pid 1; `rm -rf /`\n")
    first.stdin.close()
    assert first.wait(timeout=10) == 0
    first.stdout.close()
    third = _remote(ssh.lock_argv(path, "c"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert third.stdout is not None and third.stdin is not None
    assert third.stdout.readline() == b"deploycheck-lock-taken\n"
    assert Path(path + ".holder").read_text() == "c\n"
    third.stdin.close()
    third.wait(timeout=10)
    third.stdout.close()


def test_the_holder_says_who_takes_the_lock() -> None:
    text = ssh.describe_holder()
    assert text.startswith("host ") and ", pid " in text and ", user " in text and text.endswith(" UTC")


# ssh's own words (OpenSSH 9.2, captured from a master's -E log against the test server)
CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Offending ED25519 key in /tmp/bad_known_hosts:1
Host key for [127.0.0.1]:47301 has changed and you have requested strict checking.
Host key verification failed.
"""


@pytest.mark.parametrize(
    ("log", "reason", "line"),
    [
        (
            CHANGED,
            "its host key is not the one known_hosts has for it",
            "Host key for [127.0.0.1]:47301 has changed and you have requested strict checking.",
        ),
        (
            "No ED25519 host key is known for [127.0.0.1]:47301 and you have requested strict checking.\n"
            "Host key verification failed.\n",
            "known_hosts has no host key for it",
            "No ED25519 host key is known for [127.0.0.1]:47301 and you have requested strict checking.",
        ),
        (
            "root@127.0.0.1: Permission denied (publickey).\n",
            "the server refused the key",
            "root@127.0.0.1: Permission denied (publickey).",
        ),
        (
            "ssh: connect to host 127.0.0.1 port 47399: Connection refused\n",
            "nothing accepts connections at its address and port",
            "ssh: connect to host 127.0.0.1 port 47399: Connection refused",
        ),
        (
            "ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n",
            "its host name does not resolve",
            "ssh: Could not resolve hostname nowhere.invalid: Name or service not known",
        ),
        (
            "ssh: connect to host 10.9.9.9 port 22: Connection timed out\n",
            "it does not answer",
            "ssh: connect to host 10.9.9.9 port 22: Connection timed out",
        ),
        (
            "kex_exchange_identification: Connection closed by remote host\n",
            "it closed the connection before the login",
            "kex_exchange_identification: Connection closed by remote host",
        ),
        ("something new\nthe last words\n", "", "the last words"),
        ("", "", ""),
    ],
)
def test_ssh_s_words_become_a_reason_and_the_line_that_says_so(log: str, reason: str, line: str) -> None:
    found_reason, check, found_line = ssh.diagnose(log)
    assert (found_reason, found_line) == (reason, line)
    assert bool(check) == bool(reason)


def test_a_connection_not_opened_says_so() -> None:
    connection = SSHConnection("deploy@db1")
    assert not connection.alive()
    for call in (lambda: connection.docker_host, lambda: connection.run(["true"]), lambda: connection.forward(80)):
        with pytest.raises(SSHError, match="is not open: open\\(\\) it first"):
            call()
    connection.close()  # nothing to do, no error

"""Generated secrets: made once, private, whole; an empty or unreadable one is one clear error."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploycheck.request import secrets
from deploycheck.request.secrets import GeneratedSecretError


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets everything through: the modes must not depend on the user's."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_generated_secret_is_made_once_0600_in_a_folder_made_0700(tmp_path: Path, open_umask: None) -> None:
    store = tmp_path / ".deploycheck" / "local" / "db_password"
    made = secrets.generated("UNIT_DB_PASSWORD", store)
    assert mode(store) == 0o600 and mode(store.parent) == 0o700
    assert store.read_text() == made.reveal() + "\n" and len(made.reveal()) >= 32
    assert secrets.generated("UNIT_DB_PASSWORD", store) == made, "kept: the next run gets the same one"
    assert str(made) == secrets.MASK and f"generated, {store}" in made.source
    assert sorted(p.name for p in store.parent.iterdir()) == ["db_password"], "no temporary file is left"


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "local"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    secrets.generated("UNIT_API_TOKEN", folder / "api_token")
    assert mode(folder) == 0o755 and mode(folder / "api_token") == 0o600


@pytest.mark.parametrize("content", ["", "\n", "   \t\n  "])
def test_an_empty_generated_secret_is_one_clear_error_and_is_left_as_it_is(tmp_path: Path, content: str) -> None:
    store = tmp_path / "db_password"
    store.write_text(content)
    with pytest.raises(GeneratedSecretError) as empty:
        secrets.generated("UNIT_DB_PASSWORD", store)
    assert isinstance(empty.value, ValueError)
    assert str(empty.value) == (
        f"the generated secret {store} (for $UNIT_DB_PASSWORD) is empty: delete it to make a new one, knowing that "
        "data volumes made with the old one will refuse the new one (remove them too, or put the old value back)."
    )
    assert store.read_text() == content, "nothing is made over it"


def test_an_unreadable_generated_secret_is_one_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "db_password"
    store.mkdir()
    with pytest.raises(GeneratedSecretError, match=r"db_password \(for \$UNIT_DB_PASSWORD\) cannot be read \(Is a"):
        secrets.generated("UNIT_DB_PASSWORD", store)
    store.rmdir()
    store.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GeneratedSecretError, match=r"cannot be read \(it is not text\): fix its permissions, or"):
        secrets.generated("UNIT_DB_PASSWORD", store)


def test_the_secret_kept_is_read_without_its_line_end(tmp_path: Path) -> None:
    store = tmp_path / "api_token"
    store.write_text("  kept-value\n")
    assert secrets.generated("UNIT_API_TOKEN", store).reveal() == "kept-value"


def test_processes_generating_at_once_all_get_the_one_that_was_kept(tmp_path: Path) -> None:
    store = tmp_path / "local" / "db_password"
    start = threading.Barrier(8)
    made: list[str] = []
    failures: list[BaseException] = []

    def generate() -> None:
        start.wait()
        try:
            made.append(secrets.generated("UNIT_DB_PASSWORD", store).reveal())
        except BaseException as error:  # kept for the assertion below, which shows it
            failures.append(error)

    threads = [threading.Thread(target=generate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(made) == 8 and set(made) == {store.read_text().strip()}
    assert sorted(p.name for p in store.parent.iterdir()) == ["db_password"]

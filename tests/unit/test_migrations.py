"""The migration executor's reading of a file: its statements and lines (as psql splits them), and a failure
named by file, line and statement, in the server's words. (It runs files with psql; the e2e tests run it.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploycheck.engine.commands import Command, Result
from deploycheck.release.migrations import (
    _APPLIED,
    _LEFT,
    _STARTS,
    FOLDER,
    MigrationError,
    _failure,
    run_files,
    statements,
)

FILE = """-- 0002: keys and indexes
CREATE INDEX orders_item ON orders (item);
CREATE INDEX orders_created ON orders (created_at);
CREATE FUNCTION touch() RETURNS trigger AS $body$
BEGIN
  NEW.updated_at := now(); -- a ';' here ends nothing
  RETURN NEW;
END $body$ LANGUAGE plpgsql;
/* a block comment; with a semicolon */
CREATE TABLE t (id bigint PRIMARY KEY,
    tenant bigint);
SELECT create_distributed_table('t',
    'tenant');
SELECT 'it''s; fine' AS "odd;name";
"""


def test_statements_are_split_as_psql_splits_them_with_their_lines() -> None:
    found = [(s.first_line, s.last_line, s.text.split()[0]) for s in statements(FILE)]
    assert found == [
        (2, 2, "CREATE"),
        (3, 3, "CREATE"),
        (4, 8, "CREATE"),
        (10, 11, "CREATE"),
        (12, 13, "SELECT"),
        (14, 14, "SELECT"),
    ]
    assert statements(FILE)[2].text.endswith("LANGUAGE plpgsql;"), "a dollar-quoted body is one statement"


def test_a_last_statement_without_a_semicolon_and_a_trailing_comment() -> None:
    assert [s.text for s in statements("SELECT 1;\nSELECT 2\n-- done\n")] == ["SELECT 1;", "SELECT 2\n-- done"]
    assert statements("-- only a comment\n") == []


def test_a_failure_names_the_file_the_line_the_statement_and_citus_words(tmp_path: Path) -> None:
    path = tmp_path / "0002_keys.sql"
    path.write_text(FILE)
    output = (
        'psql:/tmp/deploycheck-migrations/0002_keys.sql:13: ERROR:  cannot create constraint on "t"\n'
        "DETAIL:  Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints that do not "
        "include the partition column (with an equality operator if EXCLUDE).\n"
    )
    failure = _failure(path, output)
    assert failure.reason == (
        "migration 0002_keys.sql failed at line 13 (SELECT create_distributed_table('t', 'tenant');): cannot create "
        'constraint on "t" DETAIL:  Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints '
        "that do not include the partition column (with an equality operator if EXCLUDE)."
    )


def test_a_failure_without_psql_s_location_is_psql_s_own_words_else_the_last(tmp_path: Path) -> None:
    path = tmp_path / "0003.sql"
    path.write_text("SELECT 1;\n")
    refused = 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed\n'
    failure = _failure(path, refused + "\tIs the server running locally?\n")
    assert failure.reason.startswith("migration 0003.sql failed: psql: error: connection to server on socket")
    assert _failure(path, "first\nkilled\n").reason == "migration 0003.sql failed: killed"
    assert _failure(path, "").reason == "migration 0003.sql failed: psql failed without a message"


class ScriptRunner:
    """Answers the executor's script with the output given; records every command it was asked to run."""

    def __init__(self, returncode: int, stdout: str) -> None:
        self.returncode, self.stdout = returncode, stdout
        self.commands: list[Command] = []

    def exec(self, container: object, command: Command, *, check: bool = True) -> Result:
        self.commands.append(command)
        if len(self.commands) == 1:
            return Result(command, self.returncode, self.stdout, "")
        return Result(command, 0, "", "")


class Coordinator:
    def put_archive(self, path: str, data: bytes) -> bool:
        return True


def test_the_script_s_last_word_is_no_file_s_error_and_its_folder_goes_as_root(tmp_path: Path) -> None:
    """The script prints its marks and, where it could not remove its folder, a last word: that word is not the
    failed file's output, and the folder is removed by a root exec."""
    first, second = tmp_path / "0001_a.sql", tmp_path / "0002_b.sql"
    first.write_text("SELECT 1;\n")
    second.write_text("SELECT 2;\nSELECT boom;\n")
    output = (
        f"{_STARTS}0001_a.sql\n{_APPLIED}0001_a.sql\n{_STARTS}0002_b.sql\n"
        f'psql:{FOLDER}/0002_b.sql:2: ERROR:  column "boom" does not exist\n{_LEFT}\n'
    )
    runner = ScriptRunner(3, output)
    with pytest.raises(MigrationError) as failed:
        run_files(runner, Coordinator(), "app", "app", [first, second])  # type: ignore[arg-type]
    assert failed.value.reason == (
        'migration 0002_b.sql failed at line 2 (SELECT boom;): column "boom" does not exist'
    ), failed.value.reason
    assert failed.value.applied == ("0001_a.sql",)
    assert "@@" not in failed.value.detail
    clean_up = runner.commands[1]
    assert (clean_up.user, clean_up.argv[-1]) == ("root", f"rm -rf {FOLDER}")

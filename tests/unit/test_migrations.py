"""The migration executor's reading of a file: its statements and lines (as psql splits them), and a failure
named by file, line and statement, in the server's words. (It runs files with psql; the e2e tests run it.)"""

from __future__ import annotations

from pathlib import Path

from deploycheck.release.migrations import _failure, statements

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


def test_a_failure_without_psql_s_location_keeps_its_last_words(tmp_path: Path) -> None:
    path = tmp_path / "0003.sql"
    path.write_text("SELECT 1;\n")
    failure = _failure(path, 'psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed\n')
    assert failure.reason.startswith("migration 0003.sql failed: psql: error: connection to server on socket")

"""Which Citus a run may use: the source archive read for its version, the version a configured tag asks for,
and what is remembered per engine (a damaged record is started anew, never a crash)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from deploycheck.engine.citus import CitusImage, CitusSource, CitusUnavailable, Remembered, _matches, _version_of


def archive(tmp_path: Path, name: str, configure: str) -> Path:
    path = tmp_path / f"{name}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = configure.encode()
        info = tarfile.TarInfo(f"{name}/configure")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_a_citus_source_release_says_its_version(tmp_path: Path) -> None:
    path = archive(tmp_path, "citus-13.2.2", "#!/bin/sh\nPACKAGE_NAME='Citus'\nPACKAGE_VERSION='13.2.2'\n")
    source = CitusSource.read(path)
    assert source.version == "13.2.2" and len(source.sha256) == 64


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda tmp: tmp / "missing.tar.gz", "does not exist"),
        (lambda tmp: (tmp / "junk.tar.gz").write_text("not gzip") and tmp / "junk.tar.gz", "is not a readable .tar.gz"),
        (
            lambda tmp: archive(tmp, "other-1.0", "PACKAGE_NAME='Other'\nPACKAGE_VERSION='1.0'\n"),
            "is not Citus's source",
        ),
    ],
)
def test_anything_else_is_one_sentence_naming_the_option(tmp_path: Path, make: object, why: str) -> None:
    with pytest.raises(CitusUnavailable) as refused:
        CitusSource.read(make(tmp_path))  # type: ignore[operator]
    assert why in str(refused.value) and "--citus-source or $DEPLOYCHECK_CITUS_SOURCE" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("reference", "version", "matches_13_2_2"),
    [
        ("citusdata/citus:13.2", "13.2", True),
        ("citusdata/citus:13", "13", True),
        ("citusdata/citus:13.2.2-pg17", "13.2.2", True),
        ("citusdata/citus", None, True),
        ("citusdata/citus:latest", None, True),
        ("registry.local:5000/citus:12.1", "12.1", False),
        ("citusdata/citus:13.1", "13.1", False),
    ],
)
def test_the_version_a_tag_asks_for(reference: str, version: str | None, matches_13_2_2: bool) -> None:
    assert _version_of(reference) == version
    assert _matches("13.2.2", version) is matches_13_2_2


def test_what_an_image_resolved_to_is_remembered_per_engine(tmp_path: Path) -> None:
    remembered = Remembered(tmp_path / "images.json")
    built = CitusImage("citusdata/citus:13.2", "deploycheck/citus:13.2.2-abc", "sha256:1", "built", "13.2.2")
    remembered.put("engine-a", built)
    assert remembered.get("engine-a", "citusdata/citus:13.2") == built
    assert remembered.get("engine-b", "citusdata/citus:13.2") is None, "another engine resolves on its own"
    remembered.forget("engine-a")
    assert remembered.get("engine-a", "citusdata/citus:13.2") is None


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"e": {"citusdata/citus:13.2": {"how": "stolen"}}}'])
def test_a_damaged_record_is_started_anew(tmp_path: Path, content: str) -> None:
    path = tmp_path / "images.json"
    path.write_text(content)
    remembered = Remembered(path)
    assert remembered.get("e", "citusdata/citus:13.2") is None
    remembered.put("e", CitusImage("citusdata/citus:13.2", "citusdata/citus:13.2", "sha256:2", "present"))
    assert remembered.get("e", "citusdata/citus:13.2") is not None

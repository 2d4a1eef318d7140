"""The Citus image a stack runs: real Citus, always.

The environment names a Citus image (``citus_image``, the official ``citusdata/citus:13.2`` by default). It is
used when the engine has it or can pull it. Where it cannot be had (no registry, as on our build machines),
real Citus is built from a Citus source release archive (``--citus-source`` or ``$DEPLOYCHECK_CITUS_SOURCE``)
into an image of ours with the official image's interface (``citus_image/``), tagged by a digest of its inputs
so that it is built once per engine. What a configured image resolved to is remembered per engine, so a warm
run asks no registry; set-up, the images stage and the reports all read it from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import docker
import docker.errors

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed, Runner

SOURCE_VARIABLE = "DEPLOYCHECK_CITUS_SOURCE"
BUILT_REPOSITORY = "deploycheck/citus"
CONTEXT = Path(__file__).resolve().parent / "citus_image"
# A Debian trixie base for the build: set-up makes the first offline (debootstrap); the second where it can be pulled.
BASE_IMAGES = ("deploycheck/debian-base:trixie", "debian:trixie-slim")
INPUTS_LABEL = "org.deploycheck.citus-inputs"
PULL_TIMEOUT_SECONDS = 120
log = logging.getLogger("deploycheck.citus")

How = Literal["present", "pulled", "built"]


class CitusUnavailable(Exception):
    """The configured Citus image cannot be had, nor built: one sentence saying what to do."""


class BaseImageMissing(CitusUnavailable):
    """Building Citus needs a Debian trixie base image, and none is here (set-up makes one offline)."""


@dataclass(frozen=True)
class CitusSource:
    """A Citus source release archive: where it is, which Citus it holds, its sha256."""

    archive: Path
    version: str
    sha256: str

    @classmethod
    def read(cls, archive: Path) -> CitusSource:
        def refuse(why: str) -> CitusUnavailable:
            return CitusUnavailable(
                f"the Citus source archive {archive} {why}: give a Citus source release (citus-X.Y.Z.tar.gz from "
                f"github.com/citusdata/citus) with --citus-source or ${SOURCE_VARIABLE}."
            )

        if not archive.is_file():
            raise refuse("does not exist")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                member = next(
                    (m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/configure")), None
                )
                handle = tar.extractfile(member) if member is not None else None
                text = handle.read().decode(errors="replace") if handle is not None else ""
        except (OSError, tarfile.TarError, EOFError):
            raise refuse("is not a readable .tar.gz") from None
        found = re.search(r"^PACKAGE_NAME='Citus'$.*?^PACKAGE_VERSION='([0-9][0-9.]*)'$", text, re.M | re.S)
        if found is None:
            raise refuse("is not Citus's source (no configure of package Citus at its top)")
        digest = hashlib.sha256()
        with archive.open("rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                digest.update(chunk)
        return cls(archive.resolve(), found.group(1), digest.hexdigest())


@dataclass(frozen=True)
class CitusImage:
    """What a configured Citus image resolved to on one engine."""

    wanted: str
    reference: str
    image_id: str
    how: How
    version: str = ""  # the source release's, for a built image
    source_stamp: str = ""  # for a built image: its archive's path, size and time, to see a new one cheaply

    def describe(self) -> str:
        if self.how == "built":
            return f"{self.reference} (Citus {self.version} built from source: {self.wanted} cannot be pulled here)"
        return f"{self.reference} ({'pulled' if self.how == 'pulled' else 'present on the engine'})"


def stamp(archive: Path) -> str:
    """Path, size and modification time: what tells a new archive without reading one (~0.3 s for 10 MB)."""
    info = archive.stat()
    return f"{archive.resolve()}:{info.st_size}:{info.st_mtime_ns}"


def source_from(option: str | None, environ: dict[str, str]) -> Path | None:
    """The source archive the run was given: the option, else the variable; None when neither."""
    given = option or environ.get(SOURCE_VARIABLE, "")
    return Path(given).expanduser() if given.strip() else None


def _version_of(reference: str) -> str | None:
    """The Citus version a tag names (``13.2`` of ``citusdata/citus:13.2``); None for ``latest`` and the like."""
    tag = reference.rpartition(":")[2] if ":" in reference.rpartition("/")[2] else "latest"
    found = re.match(r"^v?(\d+(?:\.\d+)*)(?:$|[-_])", tag)
    return found.group(1) if found else None


def _matches(version: str, wanted: str | None) -> bool:
    return wanted is None or version.split(".")[: len(wanted.split("."))] == wanted.split(".")


def _image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def _pull(runner: Runner, reference: str) -> bool:
    log.info("pulling %s", reference)
    try:
        runner.run(commands.docker_pull(reference, PULL_TIMEOUT_SECONDS))
    except CommandFailed:
        return False
    return True


def _context_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in CONTEXT.rglob("*") if p.is_file()):
        digest.update(path.relative_to(CONTEXT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _base_image(client: docker.DockerClient, runner: Runner) -> str:
    for base in BASE_IMAGES:
        if _image_id(client, base) is not None:
            return base
    if _pull(runner, BASE_IMAGES[-1]):
        return BASE_IMAGES[-1]
    raise BaseImageMissing(
        f"building Citus needs a Debian trixie base image and neither {' nor '.join(BASE_IMAGES)} is here: run "
        "scripts/setup.sh, which makes one offline with debootstrap."
    )


def build(
    client: docker.DockerClient, runner: Runner, source: CitusSource, progress: Callable[[str], None] = log.info
) -> tuple[str, str]:
    """Real Citus from ``source``, unless an image of the same inputs exists; returns (reference, image id)."""
    base = _base_image(client, runner)
    inputs = hashlib.sha256(f"{_context_digest()}\0{source.sha256}\0{_image_id(client, base)}".encode()).hexdigest()
    reference = f"{BUILT_REPOSITORY}:{source.version}-{inputs[:12]}"
    existing = _image_id(client, reference)
    if existing is not None:
        return reference, existing
    progress(f"building Citus {source.version} from {source.archive} on {base} (once per engine: a few minutes)")
    with tempfile.TemporaryDirectory(prefix="deploycheck-citus-") as folder:
        context = Path(folder) / "context"
        shutil.copytree(CONTEXT, context)
        shutil.copyfile(source.archive, context / "citus.tar.gz")
        try:
            image, _ = client.images.build(
                path=str(context),
                tag=reference,
                rm=True,
                forcerm=True,
                buildargs={"BASE_IMAGE": base, "CITUS_VERSION": source.version, "CITUS_SHA256": source.sha256},
                labels={INPUTS_LABEL: inputs},
            )
        except docker.errors.BuildError as error:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in error.build_log)[-2000:]
            raise CitusUnavailable(
                f"building Citus {source.version} from {source.archive} failed ({error.msg}): read the end of its "
                f"build log below, fix the cause and run again.\n{tail}"
            ) from None
    return reference, str(image.id)


class Remembered:
    """What each configured Citus image resolved to, per engine (a JSON file; a damaged one is started anew)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, dict[str, dict[str, str]]]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
                return data
        return {}

    def get(self, engine: str, wanted: str) -> CitusImage | None:
        entry = self._read().get(engine, {}).get(wanted)
        if not isinstance(entry, dict) or entry.get("how") not in ("present", "pulled", "built"):
            return None
        try:
            return CitusImage(**entry)  # type: ignore[arg-type]  # "how" is checked just above
        except TypeError:
            return None

    def put(self, engine: str, image: CitusImage) -> None:
        data = self._read()
        data.setdefault(engine, {})[image.wanted] = asdict(image)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(self.path)

    def forget(self, engine: str) -> None:
        data = self._read()
        if data.pop(engine, None) is not None:
            self.path.write_text(json.dumps(data, indent=2) + "\n")


def resolve(
    client: docker.DockerClient,
    runner: Runner,
    wanted: str,
    source: Path | None,
    remembered: Remembered,
    progress: Callable[[str], None] = log.info,
) -> CitusImage:
    """The image the stack runs for the configured ``wanted`` on this engine: remembered, present, pulled or built."""
    engine = str(client.info().get("ID", "local"))
    known = remembered.get(engine, wanted)
    # Another source archive given since a build: build from that one instead.
    same_source = source is None or (source.is_file() and stamp(source) == getattr(known, "source_stamp", None))
    if (
        known is not None
        and _image_id(client, known.reference) == known.image_id
        and (known.how != "built" or same_source)
    ):
        return known
    citus_source = CitusSource.read(source) if source is not None else None
    image_id = _image_id(client, wanted)
    how: How = "present"
    if image_id is None and _pull(runner, wanted):
        image_id, how = _image_id(client, wanted), "pulled"
    if image_id is not None:
        image = CitusImage(wanted, wanted, image_id, how)
    else:
        if citus_source is None:
            raise CitusUnavailable(
                f"the Citus image {wanted} is not on this engine and cannot be pulled, and no Citus source archive is "
                f"given: pass --citus-source=PATH or set ${SOURCE_VARIABLE} to a Citus source release "
                "(citus-X.Y.Z.tar.gz), or load the image (docker load)."
            )
        if not _matches(citus_source.version, _version_of(wanted)):
            raise CitusUnavailable(
                f"the Citus image {wanted} cannot be pulled, and the source archive {citus_source.archive} is Citus "
                f"{citus_source.version}, not {_version_of(wanted)}: give an archive of that version, or set "
                f"citus_image to citusdata/citus:{'.'.join(citus_source.version.split('.')[:2])}."
            )
        reference, built_id = build(client, runner, citus_source, progress)
        image = CitusImage(wanted, reference, built_id, "built", citus_source.version, stamp(citus_source.archive))
    remembered.put(engine, image)
    return image

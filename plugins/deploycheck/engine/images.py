"""The stack's images: one mechanism used by set-up (``python -m deploycheck.engine.images ensure``) and the images
stage.

Each image is built from a folder under ``stack/`` and tagged by a digest of that folder's files, so an image
is rebuilt only when its files change, and a warm set-up only looks tags up. The Citus image is the official
one when it is present or can be pulled; otherwise the offline stand-in is built, and everything that shows
the Citus image says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed, Runner

ROOT = Path(__file__).resolve().parents[3]  # the suite repository: the reference stack's build folders
STATE_FILE = ROOT / ".deploycheck" / "images.json"
OFFICIAL_CITUS_IMAGE = "citusdata/citus:13.0"
STANDIN_CITUS_IMAGE = "deploycheck/citus-standin:13.0"
CONTEXT_LABEL = "org.deploycheck.context-sha256"
log = logging.getLogger("deploycheck.images")
PULL_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ImageSpec:
    """An image the project builds: a repository name and the folder it is built from."""

    repository: str
    context: Path


API = ImageSpec("deploycheck/api", ROOT / "stack" / "api")
NGINX = ImageSpec("deploycheck/nginx", ROOT / "stack" / "nginx")
CITUS_STANDIN = ImageSpec("deploycheck/citus-standin", ROOT / "stack" / "citus-standin")


@dataclass(frozen=True)
class CitusImage:
    """Which Citus image the stack runs, and whether it is the stand-in (which is not Citus)."""

    reference: str
    is_standin: bool

    def describe(self) -> str:
        if self.is_standin:
            return f"{self.reference} (offline stand-in on PostgreSQL 15: NOT Citus)"
        return f"{self.reference} (Citus)"


def context_digest(context: Path) -> str:
    """A digest of every file's relative path and bytes: it changes exactly when the build input changes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def content_tag(spec: ImageSpec) -> str:
    return f"{spec.repository}:ctx-{context_digest(spec.context)[:12]}"


def image_exists(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_built(client: docker.DockerClient, spec: ImageSpec, extra_tags: tuple[str, ...] = ()) -> str:
    """Build ``spec`` unless an image of the same content exists; returns the content tag."""
    if not (spec.context / "Dockerfile").is_file():
        raise ImageBuildFailed(f"{spec.context}/Dockerfile is missing: restore the stack folder from git")
    reference = content_tag(spec)
    if not image_exists(client, reference):
        log.info("building %s from %s", reference, spec.context.relative_to(ROOT))
        try:
            image, _ = client.images.build(
                path=str(spec.context),
                tag=reference,
                rm=True,
                forcerm=True,
                labels={CONTEXT_LABEL: context_digest(spec.context)},
            )
        except docker.errors.BuildError as error:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in error.build_log)[-2000:]
            raise ImageBuildFailed(
                f"building {spec.repository} from {spec.context} failed: {error.msg}\n{tail}"
            ) from error
    image = client.images.get(reference)
    for extra in extra_tags:
        image.tag(*split_reference(extra))
    return reference


class ImageBuildFailed(RuntimeError):
    """An image of ours did not build; the message carries the end of the build log."""


def try_pull(reference: str, runner: Runner) -> bool:
    log.info("pulling %s", reference)
    try:
        runner.run(commands.docker_pull(reference, PULL_TIMEOUT_SECONDS))
    except CommandFailed:
        return False
    return True


STANDIN_LABEL = "org.deploycheck.standin"  # set by the stand-in's Dockerfile, so a retagged stand-in still tells


def resolve_citus_image(client: docker.DockerClient, runner: Runner, wanted: str) -> CitusImage:
    """The configured Citus image if it is here or can be pulled, else the stand-in (built when missing)."""
    if wanted != STANDIN_CITUS_IMAGE and (image_exists(client, wanted) or try_pull(wanted, runner)):
        labels = client.images.get(wanted).labels or {}
        return CitusImage(wanted, is_standin=labels.get(STANDIN_LABEL) == "citus")
    if wanted != STANDIN_CITUS_IMAGE:
        log.info(
            "%s cannot be had here: using the offline stand-in %s, which is NOT Citus", wanted, STANDIN_CITUS_IMAGE
        )
    ensure_built(client, CITUS_STANDIN, extra_tags=(STANDIN_CITUS_IMAGE,))
    return CitusImage(STANDIN_CITUS_IMAGE, is_standin=True)


def remembered_citus_image(state_file: Path) -> CitusImage | None:
    """The Citus image set-up chose last time, so a warm run does not ask a registry again."""
    try:
        state = json.loads(state_file.read_text())
        return CitusImage(state["citus_image"], bool(state["citus_is_standin"]))
    except (OSError, ValueError, KeyError):
        return None


def remember(citus: CitusImage, state_file: Path) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"citus_image": citus.reference, "citus_is_standin": citus.is_standin}) + "\n")


def preferred_citus_image(wanted: str, state_file: Path = STATE_FILE) -> str:
    """The Citus image to ask for: the configured one, unless set-up already found it cannot be had."""
    remembered = remembered_citus_image(state_file)
    if remembered is not None and remembered.is_standin and wanted == OFFICIAL_CITUS_IMAGE:
        # The official image could not be had last time; keep the stand-in until set-up is asked to retry.
        return STANDIN_CITUS_IMAGE
    return wanted


def split_reference(reference: str) -> tuple[str, str]:
    """``repository:tag`` -> (repository, tag); no tag means ``latest`` (a registry's port is no tag)."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return reference, "latest"
    return repository, tag


def ensure_all(
    client: docker.DockerClient, runner: Runner, wanted_citus: str, state_file: Path = STATE_FILE
) -> tuple[CitusImage, dict[str, str]]:
    """Everything the stack runs, built or found: the Citus image and our own images by content tag."""
    citus = resolve_citus_image(client, runner, preferred_citus_image(wanted_citus, state_file))
    remember(citus, state_file)
    built = {spec.repository: ensure_built(client, spec) for spec in (API, NGINX)}
    return citus, built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploycheck.engine.images", description=__doc__)
    parser.add_argument("command", choices=["ensure"])
    parser.add_argument("--citus-image", default=OFFICIAL_CITUS_IMAGE, help="the Citus image to use when it can be had")
    parser.add_argument("--retry-pull", action="store_true", help="ask the registry again for the official Citus image")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="setup: %(message)s", stream=sys.stdout)
    if args.retry_pull and STATE_FILE.exists():
        STATE_FILE.unlink()
    try:
        client = docker.from_env()
        citus, built = ensure_all(client, Runner(), args.citus_image)
    except ImageBuildFailed as error:
        print(f"setup: {error}", file=sys.stderr)
        return 1
    except docker.errors.DockerException as error:
        print(f"setup: the Docker engine did not answer ({error}): start it and run set-up again.", file=sys.stderr)
        return 1
    # Which Citus is in use is always said, quiet or not: the stand-in must never pass for Citus.
    print(f"setup: Citus image: {citus.describe()}")
    if not args.quiet:
        for reference in built.values():
            print(f"setup: image ready: {reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

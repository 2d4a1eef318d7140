"""The reference stack's own images, and set-up's image step (``python -m deploycheck.engine.images ensure``).

Each image of ours is built from a folder under ``stack/`` and tagged by a digest of that folder's files, so an
image is rebuilt only when its files change, and a warm set-up only looks tags up. The Citus image is
``deploycheck.engine.citus``'s: set-up resolves it for the environment it is run for, as the images stage does.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploycheck.engine import citus
from deploycheck.engine.commands import Runner

ROOT = Path(__file__).resolve().parents[3]  # the suite repository: the reference stack's build folders
CONTEXT_LABEL = "org.deploycheck.context-sha256"
log = logging.getLogger("deploycheck.images")


@dataclass(frozen=True)
class ImageSpec:
    """An image the project builds: a repository name and the folder it is built from."""

    repository: str
    context: Path


API = ImageSpec("deploycheck/api", ROOT / "stack" / "api")
NGINX = ImageSpec("deploycheck/nginx", ROOT / "stack" / "nginx")


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


class ImageBuildFailed(RuntimeError):
    """An image of ours did not build; the message carries the end of the build log."""


def ensure_built(client: docker.DockerClient, spec: ImageSpec) -> str:
    """Build ``spec`` unless an image of the same content exists; returns the content tag."""
    if not (spec.context / "Dockerfile").is_file():
        raise ImageBuildFailed(f"{spec.context}/Dockerfile is missing: restore the stack folder from git")
    reference = content_tag(spec)
    if not image_exists(client, reference):
        log.info("building %s from %s", reference, spec.context)
        try:
            client.images.build(
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
    return reference


def split_reference(reference: str) -> tuple[str, str]:
    """``repository:tag`` -> (repository, tag); no tag means ``latest`` (a registry's port is no tag)."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return reference, "latest"
    return repository, tag


def ensure_stack_images(client: docker.DockerClient) -> dict[str, str]:
    """The reference stack's own images, built or found, by content tag (repository -> reference)."""
    return {spec.repository: ensure_built(client, spec) for spec in (API, NGINX)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploycheck.engine.images", description=__doc__)
    parser.add_argument("command", choices=["ensure"])
    parser.add_argument("--environment", default="local", help="the environment whose Citus image to resolve")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments.toml", help="the environment file")
    parser.add_argument("--citus-source", help=f"a Citus source release archive (default: ${citus.SOURCE_VARIABLE})")
    parser.add_argument("--retry-pull", action="store_true", help="forget what the Citus image resolved to before")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="setup: %(message)s", stream=sys.stdout)
    from deploycheck.request.environment import ConfigError, load_settings

    try:
        environment = load_settings(args.environments, args.environment, ROOT)
    except ConfigError as error:
        print(f"setup: {error}", file=sys.stderr)
        return 4
    try:
        client = docker.DockerClient(base_url=environment.docker_host) if environment.docker_host else docker.from_env()
        remembered = citus.Remembered(environment.images_state_file)
        if args.retry_pull:
            remembered.forget(str(client.info().get("ID", "local")))
        source = citus.source_from(args.citus_source, dict(os.environ))
        runner = Runner({"DOCKER_HOST": environment.docker_host} if environment.docker_host else {})
        image = citus.resolve(client, runner, environment.citus_image, source, remembered)
        built = ensure_stack_images(client)
    except citus.BaseImageMissing:
        return 3  # set-up makes the base image offline, then runs this step again
    except (ImageBuildFailed, citus.CitusUnavailable) as error:
        print(f"setup: {error}", file=sys.stderr)
        return 1
    except docker.errors.DockerException as error:
        print(f"setup: the Docker engine did not answer ({error}): start it and run set-up again.", file=sys.stderr)
        return 1
    # Which Citus runs is always said, quiet or not, as the report says it.
    print(f"setup: Citus image of environment '{environment.name}': {image.describe()}")
    if not args.quiet:
        for reference in built.values():
            print(f"setup: image ready: {reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

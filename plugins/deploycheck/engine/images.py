"""What deploycheck knows of images: a build context's digest (what a built image came from), image references,
and set-up's image step (``python -m deploycheck.engine.images ensure``): the Citus image of the environment
set-up is run for, resolved as the images stage resolves it (``deploycheck.engine.citus``)."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
from docker.utils.build import exclude_paths

from deploycheck.engine import citus
from deploycheck.engine.commands import CommandFailed, Runner
from deploycheck.engine.target import docker_client
from deploycheck.request.secrets import Secret

ROOT = Path(__file__).resolve().parents[3]  # the suite repository (its environments.toml, set-up's default)
log = logging.getLogger("deploycheck.images")


def build_context_digest(context: Path, dockerfile: str = "Dockerfile") -> str:
    """A digest of what a build sends: every file of ``context`` that its .dockerignore keeps (names and
    bytes), and the Dockerfile. It changes exactly when a build's input changes."""
    ignore = context / ".dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines()] if ignore.is_file() else []
    patterns = [p for p in patterns if p and not p.startswith("#")]
    digest = hashlib.sha256(dockerfile.encode() + b"\0")
    for name in sorted(exclude_paths(str(context), patterns, dockerfile=dockerfile)):
        path = context / name
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def split_reference(reference: str) -> tuple[str, str]:
    """``repository:tag`` -> (repository, tag); no tag means ``latest`` (a registry's port is no tag)."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return reference, "latest"
    return repository, tag


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
    from deploycheck.engine.compose import compose_for
    from deploycheck.request.environment import ConfigError, load_settings

    try:
        environment = load_settings(args.environments, args.environment)
    except ConfigError as error:
        print(f"setup: {error}", file=sys.stderr)
        return 4
    if not environment.stack.database.is_citus:
        if not args.quiet:
            print(f"setup: environment '{environment.name}' runs PostgreSQL: no Citus image to resolve")
        return 0
    runner = Runner({"DOCKER_HOST": environment.docker_host} if environment.docker_host else {})
    # The image the stack's model names for the coordinator, as the images stage reads it; set-up has no
    # secret, and needs none: placeholders stand in for them in the model it reads.
    placeholders = {key: Secret("set-up placeholder", f"${variable}") for key, variable in environment.secrets.items()}
    try:
        model = compose_for(replace(environment, secret_values=placeholders), runner, "setup", environment.citus_image)
        wanted = model.model().services[environment.stack.database.service].image
    except (CommandFailed, KeyError) as error:
        print(f"setup: the compose files of environment '{environment.name}' are not valid ({error}).", file=sys.stderr)
        return 4
    try:
        client = docker_client(environment.docker_host)
        remembered = citus.Remembered(environment.images_state_file)
        if args.retry_pull:
            remembered.forget(str(client.info().get("ID", "local")))
        source = citus.source_from(args.citus_source, dict(os.environ))
        image = citus.resolve(client, runner, wanted, source, remembered)
    except citus.BaseImageMissing:
        return 3  # set-up makes the base image offline, then runs this step again
    except citus.CitusUnavailable as error:
        print(f"setup: {error}", file=sys.stderr)
        return 1
    except docker.errors.DockerException as error:
        print(f"setup: the Docker engine did not answer ({error}): start it and run set-up again.", file=sys.stderr)
        return 1
    # Which Citus runs is always said, quiet or not, as the report says it.
    print(f"setup: Citus image of environment '{environment.name}': {image.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Images: the Citus image (configured, or built from source where it cannot be had) and the stack's own,
tagged with the release; the release's ledger entry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploycheck.engine import citus
from deploycheck.engine import images as image_store
from deploycheck.engine.citus import CitusImage
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, compose_for
from deploycheck.engine.target import Target
from deploycheck.release.ledger import Release
from deploycheck.stages import StageFailed


@dataclass(frozen=True)
class Images:
    """The release's images and Compose model, and the ledger entry that records them."""

    citus: CitusImage
    compose: Compose
    entry: Release


def resolve_citus(target: Target, source: Path | None, say: Callable[[str], None]) -> CitusImage:
    environment = target.environment
    remembered = citus.Remembered(environment.images_state_file)
    try:
        return citus.resolve(target.docker, target.runner, environment.citus_image, source, remembered, progress=say)
    except citus.CitusUnavailable as error:
        raise StageFailed(str(error).splitlines()[0], str(error)) from None


def prepare(target: Target, release: str, citus_image: CitusImage) -> Images:
    environment, client = target.environment, target.docker
    try:
        built = image_store.ensure_stack_images(client)
    except image_store.ImageBuildFailed as error:
        raise StageFailed(str(error).splitlines()[0], str(error)) from None
    releases = {}
    for key, spec in (("api", image_store.API), ("nginx", image_store.NGINX)):
        client.images.get(built[spec.repository]).tag(spec.repository, tag=release)
        releases[key] = f"{spec.repository}:{release}"
    compose = compose_for(environment, target.runner, citus_image.reference, release, releases)
    image_ids = {key: client.images.get(reference).id for key, reference in releases.items()}
    image_ids["citus"] = citus_image.image_id  # its tag can move (a rebuild, a new pull)
    try:
        configuration = compose.snapshot(environment.configurations_dir).name
    except CommandFailed as error:
        raise StageFailed("the compose files are not valid: fix them and run again", str(error)) from None
    entry = Release(release, time.time(), releases, image_ids, citus_image.reference, configuration)
    return Images(citus_image, compose, entry)

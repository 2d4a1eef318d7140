"""Images: the Citus image and ours, built or found, tagged with the release; the release's ledger entry."""

from __future__ import annotations

import time
from dataclasses import dataclass

from deploycheck.engine import images as image_store
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, compose_for
from deploycheck.engine.images import CitusImage
from deploycheck.engine.target import Target
from deploycheck.release.ledger import Release
from deploycheck.stages import StageFailed


@dataclass(frozen=True)
class Images:
    """The release's images and Compose model, and the ledger entry that records them."""

    citus: CitusImage
    compose: Compose
    entry: Release


def prepare(target: Target, release: str) -> Images:
    environment, client = target.environment, target.docker
    try:
        citus, built = image_store.ensure_all(
            client, target.runner, environment.citus_image, environment.images_state_file
        )
    except image_store.ImageBuildFailed as error:
        raise StageFailed(str(error).splitlines()[0], str(error)) from None
    releases = {}
    for key, spec in (("api", image_store.API), ("nginx", image_store.NGINX)):
        client.images.get(built[spec.repository]).tag(spec.repository, tag=release)
        releases[key] = f"{spec.repository}:{release}"
    compose = compose_for(environment, target.runner, citus.reference, release, releases)
    image_ids = {key: client.images.get(reference).id for key, reference in releases.items()}
    image_ids["citus"] = client.images.get(citus.reference).id  # its tag can move (a rebuild, a new pull)
    try:
        configuration = compose.snapshot(environment.configurations_dir).name
    except CommandFailed as error:
        raise StageFailed("the compose files are not valid: fix them and run again", str(error)) from None
    entry = Release(release, time.time(), releases, image_ids, citus.reference, configuration)
    return Images(citus, compose, entry)

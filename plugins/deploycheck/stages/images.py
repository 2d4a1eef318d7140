"""Images: every image the stack runs belongs to the release.

Images are built and had on the target's builder engine (this machine's; for a local stack, the engine that runs
it): services with a build section are built from the team's own sections (``docker compose build``); the Citus
nodes' image is the one the model names, had as ``deploycheck.engine.citus`` has it (present, pulled, or real
Citus built from its source release); every other image is present or pulled. Each service's image is pinned
to a tag of its image id (``deploycheck/pinned:ID``, shared by every release that runs the same image, so a
service whose image did not change is not recreated), and the release's Compose model is kept with those pins
(``Compose.snapshot``): the ledger entry records, per service, the pinned image, its id and, for a built one,
the digest of its build context. Then the target ships the pinned images to the engine that runs the stack (a
server's: only those it lacks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploycheck.engine import citus, commands
from deploycheck.engine.citus import CitusImage
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, ComposeModel, compose_for
from deploycheck.engine.images import build_context_digest, split_reference
from deploycheck.engine.target import Builder, Shipped, Target
from deploycheck.release.ledger import Release
from deploycheck.stages import StageFailed

PINNED_REPOSITORY = "deploycheck/pinned"
PULL_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Images:
    """The release's images and Compose model, and the ledger entry that records them."""

    citus: CitusImage | None
    compose: Compose
    entry: Release
    shipped: Shipped


def pinned_reference(image_id: str) -> str:
    return f"{PINNED_REPOSITORY}:{image_id.removeprefix('sha256:')[:20]}"


def resolve_citus(target: Target, wanted: str, source: Path | None, say: Callable[[str], None]) -> CitusImage:
    remembered = citus.Remembered(target.environment.images_state_file)
    builder = target.builder
    try:
        return citus.resolve(builder.docker, builder.runner, wanted, source, remembered, progress=say)
    except citus.CitusUnavailable as error:
        raise StageFailed(str(error).splitlines()[0], str(error)) from None


def _image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def _present_or_pulled(builder: Builder, service: str, reference: str) -> str:
    image_id = _image_id(builder.docker, reference)
    if image_id is not None:
        return image_id
    try:
        builder.runner.run(commands.docker_pull(reference, PULL_TIMEOUT_SECONDS))
    except CommandFailed:
        raise StageFailed(
            f"the image {reference} of service {service} is not on the engine and cannot be pulled: load it (docker "
            "load), give the service a build section, or correct its image"
        ) from None
    pulled = _image_id(builder.docker, reference)
    if pulled is None:
        raise StageFailed(f"the image {reference} of service {service} was pulled but is not on the engine")
    return pulled


def prepare(
    target: Target, release: str, model: ComposeModel, citus_source: Path | None, say: Callable[[str], None]
) -> Images:
    environment, builder = target.environment, target.builder
    client = builder.docker
    database = environment.stack.database
    citus_image: CitusImage | None = None
    if database.is_citus:
        wanted = model.services[database.service].image
        citus_image = resolve_citus(target, wanted, citus_source, say)
    compose = compose_for(environment, builder.runner, release, citus_image.reference if citus_image else "")
    built = model.built
    # The model again, as the release names its images (RELEASE and CITUS_IMAGE are set now), and the
    # configuration the snapshot pins: neither depends on the build, so both are read while it runs (~0.2 s).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="compose-config") as pool:
        release_model = pool.submit(compose.model)
        uninterpolated = pool.submit(compose.uninterpolated)
        if built:
            try:
                compose.build(built, timeout=environment.timeouts.stage)
            except CommandFailed as error:
                raise StageFailed(f"docker compose could not build {', '.join(built)}", str(error)) from None
        model = release_model.result()
    image_ids: dict[str, str] = {}
    digests: dict[str, str] = {}
    for name, service in model.services.items():
        if citus_image is not None and name in database.node_services:
            image_ids[name] = citus_image.image_id
        elif service.build_context is not None:
            found = _image_id(client, service.image)
            if found is None:
                raise StageFailed(f"docker compose built service {name}, but its image {service.image} is not there")
            image_ids[name] = found
            digests[name] = build_context_digest(service.build_context, service.dockerfile)
        else:
            image_ids[name] = _present_or_pulled(builder, name, service.image)
    pins = {name: pinned_reference(image_id) for name, image_id in image_ids.items()}
    for image_id, pin in {image_ids[name]: pin for name, pin in pins.items()}.items():
        client.images.get(image_id).tag(*split_reference(pin))
    try:
        configuration = compose.snapshot(environment.configurations_dir, pins, uninterpolated.result()).name
    except CommandFailed as error:
        raise StageFailed("the compose files are not valid: fix them and run again", str(error)) from None
    try:
        shipped = target.ship(sorted(set(pins.values())), say)
    except CommandFailed as error:
        raise StageFailed(f"the images could not be put on {target.where}", str(error)) from None
    release_compose = compose_for(
        environment,
        target.runner,
        release,
        citus_image.reference if citus_image else "",
        configuration=environment.configurations_dir / configuration,
    )
    entry = Release(
        id=release,
        started_at=time.time(),
        images=pins,
        image_ids=image_ids,
        citus_image=citus_image.reference if citus_image else "",
        configuration=configuration,
        build_digests=digests,
    )
    return Images(citus_image, release_compose, entry, shipped)

"""Is the release being deployed already the current, healthy one? Then there is nothing to change.

A deploy of the ledger's current release, with the same images built from the same files, onto a stack that
Compose would leave exactly as it is (its own dry run) and whose containers are all healthy, changes nothing:
it only verifies, with the smoke checks. Anything else, or any doubt, is a full deploy.
"""

from __future__ import annotations

from collections.abc import Callable

import docker
import docker.errors

from plugins import images as image_store
from plugins.commands import CommandFailed, compose_for
from plugins.containers import State, project_containers
from plugins.environment import Environment
from plugins.ledger import Ledger


def already_current(environment: Environment, release: str, connect: Callable[[], docker.DockerClient]) -> bool:
    """True when deploying ``release`` would change nothing. Read-only; the engine is asked only when the
    ledger says ``release`` is current."""
    ledger = Ledger(environment.ledger_file)
    current = ledger.current()
    if current is None or current.id != release or ledger.unfinished():
        return False
    try:
        client = connect()
        for key, spec in (("api", image_store.API), ("nginx", image_store.NGINX)):
            built = client.images.get(image_store.content_tag(spec))
            if built.id != current.image_ids.get(key):
                return False  # the image's files changed since the release was deployed
        citus = image_store.preferred_citus_image(environment.citus_image)
        if citus != current.citus_image or client.images.get(citus).id != current.image_ids.get("citus"):
            return False
        services = ["coordinator", *environment.worker_services, "api", "nginx"]
        containers = project_containers(client, environment.compose_project)
        for service in services:
            if service not in containers:
                return False
            state = State.of(containers[service])
            if state.status != "running" or state.health not in ("healthy", None):
                return False
        compose = compose_for(environment, current.citus_image, current.id, current.images)
        return not compose.would_change(services)
    except (docker.errors.DockerException, CommandFailed):
        return False

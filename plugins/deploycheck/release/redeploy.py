"""Is the release being deployed already the current, healthy one? Then there is nothing to change.

A deploy of the ledger's current release, with the same images built from the same files, onto a stack that
Compose would leave exactly as it is (its own dry run), whose containers are all healthy and whose database
has no migration pending, changes nothing: it only verifies, with the smoke checks. Anything else, or any
doubt, is a full deploy.
"""

from __future__ import annotations

import docker
import docker.errors
import psycopg

from deploycheck.engine import citus
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import ComposeModel, compose_for
from deploycheck.engine.containers import State, WaitFailed, project_containers, wait_healthy
from deploycheck.engine.images import build_context_digest
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.release.ledger import Ledger
from deploycheck.release.migrations import MigrationError, pending
from deploycheck.release.running import runs
from deploycheck.stack import NotReachable, database_connection


def why_redeploy(target: Target, model: ComposeModel, release: str) -> str | None:
    """None when deploying ``release`` would change nothing; otherwise why it must be deployed, when the ledger
    names it current (a person re-deploying it wants to know), or "" when it is simply another release.
    Read-only; the engine is asked only when the ledger says ``release`` is current."""
    environment = target.environment
    ledger = Ledger(environment.ledger_file)
    current = ledger.current()
    if current is None or current.id != release:
        return ""
    if ledger.unfinished():
        return f"an earlier run left {', '.join(ledger.unfinished())} unfinished"
    try:
        client = target.docker
        if set(model.names) != set(current.image_ids):
            return f"the stack's services are not those release {release} ran"
        database = environment.stack.database
        builder = target.builder  # where the images were built and had (on a server's stack: this machine)
        engine = str(builder.docker.info().get("ID", "local"))
        remembered = citus.Remembered(environment.images_state_file)
        for name, service in model.services.items():
            if service.build_context is not None:
                if build_context_digest(service.build_context, service.dockerfile) != current.build_digests.get(name):
                    return f"the build context of {name} changed since release {release} was deployed"
            elif database.is_citus and name in database.node_services:
                resolved = remembered.get(engine, model.services[database.service].image)
                if resolved is None or resolved.image_id != current.image_ids[name]:
                    return f"the Citus image of {name} is not the build release {release} ran"
            elif _image_id(builder.docker, service.image) != current.image_ids[name]:
                return f"the image {service.image} of {name} is not the one release {release} ran"
        containers = project_containers(client, environment.compose_project)
        starting = []
        for name in model.names:
            if name not in containers:
                return f"{name} has no container"
            state = State.of(containers[name])
            if state.status != "running" or state.health not in ("healthy", "starting", None):
                return f"{name} is {state.describe()}"
            if state.health == "starting":
                starting.append(name)
        if starting:  # just (re)started (its restart policy, a manual restart): healthy soon, or not current
            wait_healthy(client, environment.compose_project, starting, environment.timeouts.check)
        if not runs(current, {name: str(c.attrs.get("Image", "")) for name, c in containers.items()}):
            return f"the containers do not run release {release}'s images"
        compose = compose_for(environment, target.runner, current.id, current.citus_image)
        snapshot = compose.snapshot(environment.configurations_dir, current.images)
        if snapshot.name != current.configuration:
            return f"the Compose configuration changed since release {release} was deployed"
        changes = compose_for(
            environment, target.runner, current.id, current.citus_image, configuration=snapshot
        ).would_change(model.names)
        if changes:
            return f"Compose would change the stack ({changes[0].strip()})"
        if environment.migrations_dir is None:
            return None
        with database_connection(target) as conn:
            todo = pending(conn, environment.migrations_dir)  # a migration added under the same release id
        return f"migration {todo[0].name} is pending" if todo else None
    except (
        docker.errors.DockerException,
        EngineUnreachable,
        CommandFailed,
        psycopg.Error,
        MigrationError,
        WaitFailed,
        NotReachable,
    ) as error:
        return f"its state could not be read ({str(error).splitlines()[0] if str(error) else type(error).__name__})"


def _image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None

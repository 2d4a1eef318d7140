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
from deploycheck.engine import images as image_store
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import compose_for
from deploycheck.engine.containers import State, WaitFailed, project_containers, wait_healthy
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.release.ledger import Ledger
from deploycheck.release.migrations import MigrationError, pending
from deploycheck.stack import coordinator_connection


def why_redeploy(target: Target, release: str) -> str | None:
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
        for key, spec in (("api", image_store.API), ("nginx", image_store.NGINX)):
            if client.images.get(image_store.content_tag(spec)).id != current.image_ids.get(key):
                return f"the {key} image's files changed since release {release} was deployed"
        engine = str(client.info().get("ID", "local"))
        citus_image = citus.Remembered(environment.images_state_file).get(engine, environment.citus_image)
        if citus_image is None:
            return f"the Citus image {environment.citus_image} is not resolved on this engine yet"
        if citus_image.reference != current.citus_image or citus_image.image_id != current.image_ids.get("citus"):
            return f"the Citus image is now {citus_image.reference}, not the build release {release} ran"
        services = environment.services
        containers = project_containers(client, environment.compose_project)
        starting = []
        for service in services:
            if service not in containers:
                return f"{service} has no container"
            state = State.of(containers[service])
            if state.status != "running" or state.health not in ("healthy", "starting", None):
                return f"{service} is {state.describe()}"
            if state.health == "starting":
                starting.append(service)
        if starting:  # just (re)started (its restart policy, a manual restart): healthy soon, or not current
            wait_healthy(client, environment.compose_project, starting, environment.timeouts.check)
        compose = compose_for(environment, target.runner, current.citus_image, current.id, current.images)
        changes = compose.would_change(services)
        if changes:
            return f"Compose would change the stack ({changes[0].strip()})"
        with coordinator_connection(target) as conn:
            todo = pending(conn, environment.migrations_dir)  # a migration added under the same release id
        return f"migration {todo[0].name} is pending" if todo else None
    except (
        docker.errors.DockerException,
        EngineUnreachable,
        CommandFailed,
        psycopg.Error,
        MigrationError,
        WaitFailed,
    ) as error:
        return f"its state could not be read ({str(error).splitlines()[0] if str(error) else type(error).__name__})"

"""Which release of the ledger runs: the one whose recorded image ids every running container matches."""

from __future__ import annotations

from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import Target
from deploycheck.release.ledger import Ledger, Release


def runs(release: Release, running: dict[str, str]) -> bool:
    """Whether ``running`` (service -> image id of its container) is ``release``: every service it recorded runs
    its recorded image."""
    return bool(release.image_ids) and all(running.get(s) == i for s, i in release.image_ids.items())


def running_release(target: Target, ledger: Ledger) -> str | None:
    """The newest release that deployed green and whose images are what runs now; None when none is."""
    containers = project_containers(target.docker, target.environment.compose_project)
    running = {service: str(container.attrs.get("Image", "")) for service, container in containers.items()}
    return next((r.id for r in reversed(ledger.releases()) if r.outcome == "passed" and runs(r, running)), None)

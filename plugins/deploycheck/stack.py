"""The ``Stack`` handle checks use: endpoints, database connections and containers of the deployed stack."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import psycopg
import requests
from docker.models.containers import Container

from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import Target
from deploycheck.request.environment import Environment

RELEASE_LABEL = "org.deploycheck.release"
Connection = psycopg.Connection[tuple[object, ...]]


def coordinator_connection(target: Target, timeout: int = 5) -> Connection:
    """A connection to the coordinator through the port the stack publishes; the password goes only to libpq."""
    environment = target.environment
    host, port = target.host_address(environment.ports.coordinator)
    return psycopg.connect(
        host=host,
        port=port,
        dbname=environment.database.name,
        user=environment.database.user,
        password=environment.db_password.reveal(),
        connect_timeout=timeout,
        autocommit=True,
        application_name="deploycheck",
    )


def citus_version(target: Target) -> str | None:
    """What the coordinator's ``citus_version()`` says, or None when it cannot be asked."""
    try:
        with coordinator_connection(target) as conn:
            row = conn.execute("SELECT citus_version()").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


@dataclass(frozen=True)
class Stack:
    """The running stack as the checks see it: its environment, where it runs, its containers, its release."""

    target: Target
    containers: dict[str, Container]
    release: str

    @property
    def environment(self) -> Environment:
        return self.target.environment

    @property
    def client(self) -> docker.DockerClient:
        return self.target.docker

    def url(self, port: int) -> str:
        host, port = self.target.host_address(port)
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url(self.environment.ports.api)

    @property
    def proxy_url(self) -> str:
        return self.url(self.environment.ports.proxy)

    def connect(self) -> Connection:
        return coordinator_connection(self.target)

    def http_session(self) -> requests.Session:
        """HTTP with the API token the environment names (the API refuses writes without it)."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.environment.api_token.reveal()}"
        return session

    @classmethod
    def attach(cls, target: Target) -> Stack:
        """The stack as it runs now: its containers, and the release its API container is labelled with."""
        containers = project_containers(target.docker, target.environment.compose_project)
        api = containers.get("api")
        release = api.labels.get(RELEASE_LABEL, "unknown") if api is not None else "unknown"
        return cls(target, containers, release)

"""The ``Stack`` handle checks use: the deployed stack's containers, its release, and how each service is reached
(the ports its containers publish, through the target), with its database's connection."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import psycopg
import requests
from docker.models.containers import Container

from deploycheck.engine.commands import environ_now
from deploycheck.engine.containers import project_containers, service_container
from deploycheck.engine.target import Target
from deploycheck.release import fence
from deploycheck.request.environment import Environment, HttpService
from deploycheck.request.secrets import libpq_passfile

Connection = psycopg.Connection[tuple[object, ...]]


class StackSession(requests.Session):
    """HTTP to the stack's services, which this machine reaches on 127.0.0.1 (a server's through deploycheck's
    SSH forwards): never through a proxy the environment names, and with the environment read once, here, not on
    each request (``trust_env``). A session of a background probe read it on each request, iterating
    ``os.environ`` while pytest's main thread set and removed PYTEST_CURRENT_TEST: ``KeyError``. A CA bundle the
    environment names (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) is still used."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        environment = environ_now()
        bundle = environment.get("REQUESTS_CA_BUNDLE") or environment.get("CURL_CA_BUNDLE")
        if bundle:
            self.verify = bundle


class NotReachable(Exception):
    """A service's port is not published on the host: one sentence saying how to publish it."""


def published_port(container: Container, port: int) -> int | None:
    """The host port a container publishes its ``port`` (tcp) on, or None."""
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
    ports = [int(b["HostPort"]) for b in bindings if b.get("HostPort")]
    return ports[0] if ports else None


def service_address(target: Target, container: Container | None, service: str, port: int) -> tuple[str, int]:
    """Where this machine reaches ``service``'s container port ``port``: the port it publishes, through the target."""
    if container is None:
        raise NotReachable(f"service {service} has no container in project {target.environment.compose_project}")
    host_port = published_port(container, port)
    if host_port is None:
        raise NotReachable(
            f"service {service} publishes no port for its port {port}: publish it on 127.0.0.1 "
            f'(ports: ["127.0.0.1::{port}"], the engine picks the host port) so that deploycheck can reach it'
        )
    return target.host_address(host_port)


def database_connection(target: Target, timeout: int = 5, *, as_client: bool = False) -> Connection:
    """A connection to the database (the Citus coordinator, or the PostgreSQL server) through the port it
    publishes. It is deploycheck's own session: it writes under the write fence of a deploy (``release.fence``),
    unless ``as_client`` asks for the session a client of the stack gets.

    The password reaches libpq only in a password file of its own (``libpq_passfile``): never as an argument,
    which a traceback through psycopg's ``connect`` would show. ``password=""`` keeps a ``$PGPASSWORD`` of this
    machine's from taking its place (libpq reads the file when the password it is given is empty)."""
    environment = target.environment
    database = environment.stack.database
    container = service_container(target.docker, environment.compose_project, database.service)
    host, port = service_address(target, container, database.service, database.port)
    with libpq_passfile(environment.db_password) as passfile:
        return psycopg.connect(
            host=host,
            port=port,
            dbname=database.name,
            user=database.user,
            password="",
            passfile=passfile,
            connect_timeout=timeout,
            autocommit=True,
            application_name="deploycheck",
            options="" if as_client else fence.SESSION_OPTIONS,
        )


# The Citus coordinator is the database for every Citus-specific step.
coordinator_connection = database_connection


def database_version(target: Target) -> str | None:
    """What the database says it is (the coordinator's ``citus_version()``, or PostgreSQL's ``version()``), or
    None when it cannot be asked."""
    query = "SELECT citus_version()" if target.environment.stack.database.is_citus else "SELECT version()"
    try:
        with coordinator_connection(target) as conn:
            row = conn.execute(query).fetchone()
    except (psycopg.Error, NotReachable):
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

    @property
    def services(self) -> list[str]:
        """Every service of the stack that has a container."""
        return list(self.containers)

    def address(self, service: str, port: int) -> tuple[str, int]:
        return service_address(self.target, self.containers.get(service), service, port)

    def url(self, service: str, via: str = "direct") -> str:
        """The base URL of an HTTP service: reached directly, or through the proxy's route to it."""
        stack = self.environment.stack
        if via == "proxy":
            proxy = stack.proxy
            if proxy is None:
                raise NotReachable("the stack has no proxy: stack.proxy is not set")
            host, port = self.address(proxy.service, proxy.port)
            return f"http://{host}:{port}{proxy.routes.get(service, '')}"
        host, port = self.address(service, stack.http_service(service).port)
        return f"http://{host}:{port}"

    def proxy_url(self) -> str:
        proxy = self.environment.stack.proxy
        if proxy is None:
            raise NotReachable("the stack has no proxy: stack.proxy is not set")
        host, port = self.address(proxy.service, proxy.port)
        return f"http://{host}:{port}"

    def http(self, service: str) -> HttpService:
        return self.environment.stack.http_service(service)

    def connect(self) -> Connection:
        return database_connection(self.target)

    @classmethod
    def attach(cls, target: Target, release: str) -> Stack:
        """The stack as it runs now: its containers, and the release they run (``release``)."""
        return cls(target, project_containers(target.docker, target.environment.compose_project), release)

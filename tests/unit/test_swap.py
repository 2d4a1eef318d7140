"""The blue-green swap's own logic (release/swap.py) and the proxy's routes file (engine/routes.py), on a fake
engine: which services are swapped and why the others are not, what the routes file says at each step, and
what the verdict removes. The swap on the real engine, under load: tests/e2e/test_zero_downtime.py."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import docker.errors
import pytest

from deploycheck.engine import routes
from deploycheck.engine.commands import Command, Result
from deploycheck.engine.compose import Compose, ComposeModel
from deploycheck.engine.containers import PROJECT_LABEL, SERVICE_LABEL
from deploycheck.engine.target import Target
from deploycheck.release import swap
from deploycheck.request.environment import Environment, load
from tests.unit.conftest import make_project

PROJECT = "unit-local"
ROUTES = "/etc/nginx/deploycheck/routes.conf"


@dataclass
class Box:
    """A container: its name, service, state, config hash, and the files put into it."""

    name: str
    service: str
    created: str
    status: str = "running"
    config_hash: str = "old-hash"
    files: dict[str, str] = field(default_factory=dict)
    folders: tuple[str, ...] = ("/etc/nginx/deploycheck",)
    stopped_with: int | None = None
    removed: bool = False

    @property
    def labels(self) -> dict[str, str]:
        return {PROJECT_LABEL: PROJECT, SERVICE_LABEL: self.service, swap.CONFIG_HASH_LABEL: self.config_hash}

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Created": self.created}

    def put_archive(self, folder: str, data: bytes) -> bool:
        if folder not in self.folders:
            raise docker.errors.NotFound(f"{folder} not found")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                assert extracted is not None
                self.files[f"{folder}/{member.name}"] = extracted.read().decode()
        return True

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, Any]]:
        if path in self.folders:
            return [b""], {}
        if path not in self.files:
            raise docker.errors.NotFound(f"{path} not found")
        data = self.files[path].encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(Path(path).name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return [buffer.getvalue()], {}

    def stop(self, timeout: int) -> None:
        self.stopped_with, self.status = timeout, "exited"

    def remove(self) -> None:
        self.removed = True


class Boxes:
    def __init__(self, boxes: list[Box]) -> None:
        self.boxes = boxes

    def list(self, filters: dict[str, Any] | None = None, **_: object) -> list[Box]:
        wanted = (filters or {}).get("label", [])
        labels = [wanted] if isinstance(wanted, str) else wanted
        found = [b for b in reversed(self.boxes) if not b.removed]  # the engine's order: newest first
        return [b for b in found if all(b.labels.get(k) == v for k, v in (label.split("=", 1) for label in labels))]


@dataclass
class Engine:
    containers: Boxes


class Runner:
    """Answers ``docker compose config --hash`` and ``up``; records the execs in the proxy (test, reload)."""

    def __init__(self, boxes: Boxes, hashes: dict[str, str], rejects: bool = False) -> None:
        self.boxes, self.hashes, self.rejects = boxes, hashes, rejects
        self.includes = True  # the proxy's configuration includes the routes file (what nginx -T lists)
        self.execs: list[tuple[str, ...]] = []
        self.compose: list[tuple[str, ...]] = []

    def run(self, command: Command, *, check: bool = True) -> Result:
        args = tuple(command.argv[command.argv.index("--project-directory") + 4 :])  # after "-f compose.yaml"
        self.compose.append(args)
        if args[:2] == ("config", "--hash"):
            out = "\n".join(f"{s} {self.hashes[s]}" for s in args[2].split(","))
            return Result(command, 0, out, "")
        if args[0] == "up":  # the new container beside the old one, with the new configuration
            service = args[-1]
            self.boxes.boxes.append(Box(f"{PROJECT}-{service}-2", service, "2026-12-02T10:00:01", config_hash="new"))
        return Result(command, 0, "", "")

    def exec(self, container: Box, command: Command, *, check: bool = True) -> Result:
        self.execs.append(tuple(command.argv))
        if self.rejects and tuple(command.argv) == ("nginx", "-t"):
            return Result(command, 1, "", 'nginx: [emerg] unknown directive "sett"')
        if tuple(command.argv) == ("nginx", "-T"):
            listed = [f"# configuration file {path}:" for path in container.files] if self.includes else []
            return Result(command, 0, "\n".join(["# configuration file /etc/nginx/nginx.conf:", *listed]), "")
        return Result(command, 0, "", "")


@dataclass
class FakeTarget:
    environment: Environment
    docker: Engine
    runner: Runner


def environment(tmp_path: Path, extra: str = "") -> Environment:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = make_project(tmp_path)
    if extra:
        path.write_text(path.read_text() + extra)
    return load(path, "local")


def stack_of(tmp_path: Path, extra: str = "", rejects: bool = False) -> tuple[FakeTarget, Boxes]:
    boxes = Boxes(
        [
            Box(f"{PROJECT}-nginx-1", "nginx", "2026-12-02T09:00:00"),
            Box(f"{PROJECT}-api-1", "api", "2026-12-02T09:00:01"),
        ]
    )
    target = FakeTarget(environment(tmp_path, extra), Engine(boxes), Runner(boxes, {"api": "new"}, rejects))
    return target, boxes


def model(**api: Any) -> ComposeModel:
    return ComposeModel.of({"services": {"api": {"image": "api:1", **api}, "nginx": {"image": "nginx:1"}}})


def compose_of(target: FakeTarget) -> Compose:
    return Compose(PROJECT, (Path("compose.yaml"),), cast(Any, target.runner), Path("."))


def routes_file(boxes: Boxes) -> str:
    return boxes.boxes[0].files.get(ROUTES, "")


def test_the_routes_file_names_one_container_per_route_and_the_maintenance_switch() -> None:
    assert routes.variable("api") == "deploycheck_api" and routes.variable("web-app.v2") == "deploycheck_web_app_v2"
    text = routes.routes_text({"api": "p-api-2:8000"}, maintenance=False)
    assert 'set $deploycheck_api "p-api-2:8000";' in text and 'set $deploycheck_maintenance "";' in text
    assert 'set $deploycheck_maintenance "1";' in routes.routes_text({}, maintenance=True)


@pytest.mark.parametrize(
    ("api", "why"),
    [
        ({"ports": [{"target": 8000, "published": "18000", "host_ip": "127.0.0.1"}]}, "publishes host port 18000"),
        ({"container_name": "the-api"}, "fixed container_name (the-api)"),
    ],
)
def test_a_fixed_host_port_or_container_name_is_replaced_in_place_with_how_to_change_that(
    tmp_path: Path, api: dict[str, Any], why: str
) -> None:
    target, _ = stack_of(tmp_path)
    planned = swap.plan(cast(Target, target), compose_of(target), model(**api), ["api"])
    assert planned.swaps == ()
    [(service, sentence)] = planned.in_place
    assert service == "api" and why in sentence
    assert '"127.0.0.1::8000"' in sentence or "remove container_name" in sentence


def test_every_obstacle_to_a_swap_is_named_in_one_sentence(tmp_path: Path) -> None:
    target, _ = stack_of(tmp_path)
    ports = [
        {"target": 8000, "published": "18000", "host_ip": "127.0.0.1"},
        {"target": 9000, "published": "19000", "host_ip": "127.0.0.1"},
    ]
    planned = swap.plan(cast(Target, target), compose_of(target), model(container_name="the-api", ports=ports), ["api"])
    [(_, sentence)] = planned.in_place
    for needed in ("remove container_name", '"127.0.0.1::8000"', '"127.0.0.1::9000"'):
        assert needed in sentence, sentence


def test_a_changed_routed_service_is_swapped_and_an_unchanged_one_is_left_alone(tmp_path: Path) -> None:
    target, _ = stack_of(tmp_path)
    unpublished = model(ports=[{"target": 8000, "host_ip": "127.0.0.1"}])  # "127.0.0.1::8000"
    planned = swap.plan(cast(Target, target), compose_of(target), unpublished, ["api"])
    assert planned == swap.Plan(swaps=(swap.Swap("api", 8000, (f"{PROJECT}-api-1",), f"{PROJECT}-api-1:8000"),))
    target.runner.hashes["api"] = "old-hash"  # Compose would leave the container as it is
    assert swap.plan(cast(Target, target), compose_of(target), unpublished, ["api"]) == swap.Plan()


def test_no_routes_file_or_nothing_running_is_no_swap(tmp_path: Path) -> None:
    target, boxes = stack_of(tmp_path, '\n[environments.local.stack.proxy]\nroutes_file = ""\n')
    planned = swap.plan(cast(Target, target), compose_of(target), model(), ["api"])
    assert planned.swaps == () and "routes_file is ''" in planned.in_place[0][1]
    target, boxes = stack_of(tmp_path / "first")
    boxes.boxes[1].status = "exited"  # a first deploy's, or a stopped stack's: started as before
    assert swap.plan(cast(Target, target), compose_of(target), model(), ["api"]) == swap.Plan()


def test_pin_start_switch_and_retire(tmp_path: Path) -> None:
    target, boxes = stack_of(tmp_path)
    on = cast(Target, target)
    planned = (swap.Swap("api", 8000, (f"{PROJECT}-api-1",), f"{PROJECT}-api-1:8000"),)
    swap.pin(on, planned)
    assert f'set $deploycheck_api "{PROJECT}-api-1:8000";' in routes_file(boxes)
    started = swap.start_beside(on, compose_of(target), planned)
    assert target.runner.compose[-1] == ("up", "--detach", "--no-deps", "--no-recreate", "--scale", "api=2", "api")
    assert started[0].new == f"{PROJECT}-api-2"
    assert f"{PROJECT}-api-1:8000" in routes_file(boxes), "the new container serves nothing before the switch"
    assert routes.follow(on) is None  # the proxy stage's switch: the newest container of each service
    assert f'set $deploycheck_api "{PROJECT}-api-2:8000";' in routes_file(boxes)
    assert target.runner.execs[-2:] == [("nginx", "-t"), ("nginx", "-s", "reload")]
    actions: list[str] = []
    swap.retire(on, started, actions)
    old, new = boxes.boxes[1], boxes.boxes[2]
    assert (old.stopped_with, old.removed, new.removed) == (30, True, False)
    assert actions == [f"api: the proxy switched to {PROJECT}-api-2; {PROJECT}-api-1 stopped and removed"]


def test_a_rollback_switches_back_and_removes_only_the_new_container(tmp_path: Path) -> None:
    target, boxes = stack_of(tmp_path)
    on = cast(Target, target)
    planned = (swap.Swap("api", 8000, (f"{PROJECT}-api-1",), f"{PROJECT}-api-1:8000"),)
    started = swap.start_beside(on, compose_of(target), planned)
    routes.follow(on)
    actions: list[str] = []
    swap.undo(on, started, actions)
    old, new = boxes.boxes[1], boxes.boxes[2]
    assert (old.status, old.removed, new.removed) == ("running", False, True)
    assert f'set $deploycheck_api "{PROJECT}-api-1:8000";' in routes_file(boxes)
    assert actions == [
        f"api: the proxy routes to {PROJECT}-api-1 again, which kept running; {PROJECT}-api-2 of the failed release "
        "removed"
    ]


def test_maintenance_is_on_until_the_proxy_follows_the_live_containers_again(tmp_path: Path) -> None:
    target, boxes = stack_of(tmp_path)
    on = cast(Target, target)
    assert routes.maintenance(on) == "the proxy answered maintenance (503, Retry-After) meanwhile"
    assert 'set $deploycheck_maintenance "1";' in routes_file(boxes)
    assert routes.follow(on) is None
    assert 'set $deploycheck_maintenance "";' in routes_file(boxes)


def test_a_rejected_routes_file_is_put_back_and_a_proxy_without_the_folder_is_reloaded(tmp_path: Path) -> None:
    target, boxes = stack_of(tmp_path, rejects=True)
    on = cast(Target, target)
    boxes.boxes[0].files[ROUTES] = "# as it was\n"
    with pytest.raises(routes.RoutesFailed, match=r"nginx rejected its routes file .*unknown directive"):
        routes.write(on)
    assert routes_file(boxes) == "# as it was\n"
    target, boxes = stack_of(tmp_path / "team")
    boxes.boxes[0].folders = ()  # a team's proxy that takes no routes file
    assert routes.follow(cast(Target, target)) is None
    assert target.runner.execs == [("nginx", "-s", "reload")]
    assert routes.maintenance(cast(Target, target)) == ""
    with pytest.raises(routes.NoRoutesFolder, match=r"is not a folder in nginx's container.*routes_file = ''"):
        swap.pin(cast(Target, target), (swap.Swap("api", 8000, (f"{PROJECT}-api-1",), f"{PROJECT}-api-1:8000"),))


def test_the_pin_keeps_the_route_where_it_is_and_a_stopped_leftover_is_removed_before_the_scale(
    tmp_path: Path,
) -> None:
    target, boxes = stack_of(tmp_path)
    on = cast(Target, target)
    # A --keep-failed run left two API containers running, the route on the older; a cut-short retirement left
    # a third one stopped.
    boxes.boxes.append(Box(f"{PROJECT}-api-3", "api", "2026-12-02T09:30:00"))
    boxes.boxes.insert(1, Box(f"{PROJECT}-api-0", "api", "2026-12-02T08:00:00", status="exited"))
    routes.write(on, {"api": f"{PROJECT}-api-1:8000"})
    assert routes.routed_now(on) == {"api": f"{PROJECT}-api-1:8000"}
    planned = swap.plan(on, compose_of(target), model(), ["api"])
    assert planned.swaps == (swap.Swap("api", 8000, (f"{PROJECT}-api-1", f"{PROJECT}-api-3"), f"{PROJECT}-api-1:8000"),)
    swap.start_beside(on, compose_of(target), planned.swaps)
    assert boxes.boxes[1].removed, "the stopped leftover would count for the scale, and be started"
    assert target.runner.compose[-1][4:6] == ("--scale", "api=3")


def test_a_proxy_without_a_routes_file_is_reloaded_when_the_services_change(tmp_path: Path) -> None:
    target, boxes = stack_of(tmp_path, '\n[environments.local.stack.proxy]\nroutes_file = ""\n')
    assert routes.follow(cast(Target, target)) is None
    assert target.runner.execs == [("nginx", "-s", "reload")] and routes_file(boxes) == ""


def test_a_rollback_whose_proxy_is_down_still_removes_the_new_container(tmp_path: Path) -> None:
    """The failed release's proxy may be what failed: the new container goes all the same, and the routes are
    written once the previous release serves again (verify_serving's routes.follow)."""
    target, boxes = stack_of(tmp_path)
    on = cast(Target, target)
    started = swap.start_beside(on, compose_of(target), (swap.Swap("api", 8000, (f"{PROJECT}-api-1",), "x:8000"),))
    boxes.boxes[0].status = "restarting"  # nginx, with a configuration it rejects
    actions: list[str] = []
    swap.undo(on, started, actions)
    assert boxes.boxes[2].removed and not boxes.boxes[1].removed
    assert actions[0].startswith("the proxy's routes could not be switched back yet (nginx is not running")


def test_a_routes_file_the_proxy_does_not_include_is_no_swap(tmp_path: Path) -> None:
    """Written but not read, the routes would switch nothing: every container would answer the service's route,
    the new one before it is judged. The pin says so, and the service is replaced in place (Deployment._swaps)."""
    target, _ = stack_of(tmp_path)
    target.runner.includes = False
    with pytest.raises(routes.NoRoutesFolder, match=r"does not include deploycheck's routes file .*\(nginx -T\)"):
        swap.pin(cast(Target, target), (swap.Swap("api", 8000, (f"{PROJECT}-api-1",), f"{PROJECT}-api-1:8000"),))

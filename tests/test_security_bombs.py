"""Bombs sent to a real `vh-orch serve` by a non-admin API user: each is refused with a message,
nothing is stored, and the daemon's peak memory barely moves. A metadata-key flood is bounded,
bad query values are 400s naming the parameter, and live streams are capped per user."""

from __future__ import annotations

import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from conftest import BUSYBOX, VhOrch, installation
from bombs import ALIAS_BOMB, header_bomb, members, package
from test_api_security import TIMEOUT, Client, project_id

MiB = 1 << 20
MAX_GROWTH_KIB = 100 * 1024  # the daemon's peak memory may grow this much over all the bombs
MEMBER_BOUND = 1000  # VH_ORCH_MAX_PACKAGE_FILES for this daemon: a member-count bomb need not be huge
FLOOD_KEYS = 20_000
FLOOD = ('i=0; while [ $i -lt %d ]; do echo "{\\"key_$i\\": $i}"; i=$((i+1)); done; '
         'echo \'{"key_0": -1, "late": 1}\'') % FLOOD_KEYS
STEPS = [{"step": {"name": name, "image": BUSYBOX, "command": command}}
         for name, command in (("flood", FLOOD), ("idle", "sleep 300"), ("hello", "echo hello"))]
CONFIG = {"valohai.yaml": yaml.safe_dump(STEPS).encode()}


@dataclass
class World:
    vh: VhOrch
    mallory: Client
    project: str
    commit: str  # a package of STEPS, uploaded


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_images: None) -> Iterator[World]:
    with installation(tmp_path_factory.mktemp("bombs") / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        vh("user", "add", "mallory")
        vh("project", "add", "bombs", "--owner", "mallory")
        vh.env["VH_ORCH_MAX_PACKAGE_FILES"] = str(MEMBER_BOUND)
        vh.start_daemon()
        mallory = Client(vh.api_url(), vh.json("user", "token", "mallory")["token"])
        pid = project_id(mallory, "bombs")
        uploaded = mallory.upload(pid, package(CONFIG))
        assert uploaded.status_code == 201, uploaded.text
        yield World(vh, mallory, pid, uploaded.json()["identifier"])


def peak_kib(vh: VhOrch) -> int:
    """The daemon's peak resident memory so far (VmHWM), in KiB."""
    assert vh.daemon is not None
    for line in Path(f"/proc/{vh.daemon.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")




def field_bomb(size: int, boundary: str = "vh0rchb0mb") -> Iterator[bytes]:
    """A multipart upload whose `description` is `size` bytes, sent as it is made (chunked)."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="d.tgz"\r\n\r\n'.encode()
           + package(CONFIG) + b"\r\n")
    yield f'--{boundary}\r\nContent-Disposition: form-data; name="description"\r\n\r\n'.encode()
    chunk = b"d" * MiB
    for _ in range(size // MiB):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def message(answer: requests.Response, field: str) -> str:
    return str(answer.json()[field][0]["message"])


def test_bombs_are_refused_with_a_message_and_nothing_grows(world: World) -> None:
    vh, mallory, pid = world.vh, world.mallory, world.project
    commits_before = mallory.get(f"/api/v0/commits/?project={pid}").json()["results"]
    kept_before = sorted(p for p in (vh.home / "adhoc").rglob("*") if p.is_file())
    projects_before = mallory.get("/api/v0/projects/").json()["count"]
    before = peak_kib(vh)

    pax = header_bomb(tarfile.XHDTYPE, 200 * MiB, CONFIG)
    assert len(pax) < MiB  # a 200 MiB header in a small upload
    refused = mallory.upload(pid, pax)
    assert refused.status_code == 400, refused.text
    assert "pax extended header of 209,715,200 bytes; the limit is 64 KiB" in message(refused, "data")

    refused = mallory.upload(pid, header_bomb(tarfile.GNUTYPE_LONGNAME, 200 * MiB, CONFIG))
    assert refused.status_code == 400 and "GNU long-name header" in message(refused, "data")

    refused = mallory.upload(pid, members(3 * MEMBER_BOUND))
    assert refused.status_code == 400
    assert f"more than {MEMBER_BOUND:,} members" in message(refused, "data")
    assert "--max-package-files" in message(refused, "data")
    refused = mallory.upload(pid, members(300_000))  # empty members: their headers count
    assert refused.status_code == 400 and "nothing was stored" in message(refused, "data")

    refused = mallory.upload(pid, package({"valohai.yaml": ALIAS_BOMB}))
    assert refused.status_code == 400 and "YAML aliases" in message(refused, "yaml_path")

    refused = mallory.post(f"/api/v0/projects/{pid}/import-package/", data=field_bomb(300 * MiB),
                           headers={"Content-Type": "multipart/form-data; boundary=vh0rchb0mb"})
    assert refused.status_code == 400, refused.text
    assert "'description' is longer than 64 KiB" in message(refused, "description")

    # Every other route's body is bounded before it is parsed: forms at 64 KiB, the rest at 4 MiB.
    big_form = {"username": "mallory", "password": "p" * MiB}
    for path in ("/api/v0/get-token/", "/login"):
        answer = requests.post(f"{mallory.api}{path}", data=big_form, timeout=TIMEOUT, allow_redirects=False)
        assert answer.status_code == 413 and "64 KiB" in message(answer, "non_field_errors"), path
    answer = mallory.post("/api/v0/projects/", data={"name": "grown", "description": "d" * MiB})
    assert answer.status_code == 413
    answer = mallory.post("/api/v0/executions/", json={"project": pid, "commit": world.commit, "step": "hello",
                                                       "title": "t" * (5 * MiB)})
    assert answer.status_code == 413 and "4 MiB" in message(answer, "non_field_errors")

    assert mallory.get(f"/api/v0/commits/?project={pid}").json()["results"] == commits_before
    assert sorted(p for p in (vh.home / "adhoc").rglob("*") if p.is_file()) == kept_before
    assert mallory.get("/api/v0/projects/").json()["count"] == projects_before
    grown = peak_kib(vh) - before
    assert grown < MAX_GROWTH_KIB, f"the daemon's peak memory grew by {grown} KiB"


def submit(world: World, step: str) -> dict[str, Any]:
    answer = world.mallory.post("/api/v0/executions/", json={"project": world.project, "commit": world.commit,
                                                             "step": step})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_metadata_key_flood_keeps_a_thousand_keys_one_warning_and_every_line(world: World) -> None:
    vh, mallory = world.vh, world.mallory
    created = submit(world, "flood")
    assert vh.wait(created["id"], timeout=120)["status"] == "complete"
    metadata = mallory.get(f"/api/v0/executions/{created['id']}/metadata/").json()
    latest = metadata["latest"]
    assert len(latest) == 1000 and latest["key_0"] == -1 and "late" not in latest  # known keys still count
    assert len(metadata["points"]) == 1001  # lines with only new keys past the bound are no points
    events = mallory.get(f"/api/v0/executions/{created['id']}/events/?limit=0").json()["events"]
    lines = [e["message"] for e in events if e["stream"] != "status"]
    warnings = [line for line in lines if "distinct metadata keys" in line]
    assert len(warnings) == 1 and "--max-metadata-keys" in warnings[0]
    assert sum(1 for line in lines if line.startswith('{"key_')) == FLOOD_KEYS + 1
    # The views that read the latest values agree: the API's list (sorted by a key) and the CLI.
    listed = mallory.get(f"/api/v0/executions/?project={world.project}&ordering=-metadata.key_999").json()
    assert listed["results"][0]["id"] == created["id"] and len(listed["results"][0]["metadata"]) == 1000
    assert len(vh.json("exec", "info", str(created["id"]))["metadata_latest"]) == 1000


def test_bad_query_values_are_400s_naming_the_parameter(world: World) -> None:
    mallory, pid = world.mallory, world.project
    eid = submit(world, "hello")["id"]
    huge = "18446744073709551616"  # 2**64
    cases = [
        ("/api/v0/executions/?ordering=%22", "ordering"),
        ("/api/v0/executions/?ordering=-metadata.a%22b", "ordering"),
        ("/api/v0/executions/?ordering=metadata.", "ordering"),
        ("/api/v0/executions/?limit=-1", "limit"),
        (f"/api/v0/executions/?offset={huge}", "offset"),
        ("/api/v0/executions/?project=abc", "project"),
        ("/api/v0/executions/?counter=%C2%B2", "counter"),
        ("/api/v0/executions/?task=x", "task"),
        (f"/api/v0/executions/{eid}/events/?after={huge}", "after"),
        (f"/api/v0/executions/{eid}/events/?before=-1", "before"),
        (f"/api/v0/executions/{eid}/events/?limit=lots", "limit"),
        (f"/api/v0/executions/{eid}/events/?search=", "search"),
        (f"/api/v0/executions/{eid}/events/?search={'x' * 201}", "search"),
        (f"/api/v0/executions/{eid}/metadata/?after=-5", "after"),
        (f"/api/v0/executions/{eid}/stream/?after={huge}", "after"),
        ("/api/v0/commits/?project=x", "project"),
        (f"/api/v0/commits/?project={pid}&offset=-1", "offset"),
        ("/api/v0/commits/~x/?project=%22", "project"),
        ("/api/v0/data/?output_execution=abc", "output_execution"),
        ("/api/v0/data/?project=abc", "project"),
        ("/api/v0/tasks/?project=1.5", "project"),
        (f"/api/v0/tasks/?limit={huge}", "limit"),
        ("/api/v0/projects/?offset=-3", "offset"),
        ("/api/v0/environments/?limit=1e3", "limit"),
    ]
    for path, field in cases:
        answer = mallory.get(path)
        assert answer.status_code == 400, (path, answer.text)
        assert field in answer.json(), (path, answer.json())
    answer = mallory.get(f"/api/v0/executions/{eid}/stream/", headers={"Last-Event-ID": huge})
    assert answer.status_code == 400 and "Last-Event-ID" in answer.json()

    # Never a 500, whatever the value, on every route that takes one.
    hostile = ['"', "-1", huge, "9" * 5000, "²", "abc", "", "%00", "1e3", "0x10"]
    routes = {"/api/v0/executions/": ("ordering", "limit", "offset", "project", "counter", "task", "status"),
              f"/api/v0/executions/{eid}/events/": ("limit", "after", "before", "search"),
              f"/api/v0/executions/{eid}/metadata/": ("after",), f"/api/v0/executions/{eid}/stream/": ("after",),
              "/api/v0/commits/": ("project", "limit", "offset"), "/api/v0/projects/": ("limit", "offset"),
              "/api/v0/data/": ("output_execution", "project", "limit", "offset"),
              "/api/v0/environments/": ("limit", "offset"), "/api/v0/tasks/": ("project", "counter", "limit")}
    for path, params in routes.items():
        for param in params:
            for value in hostile:
                answer = mallory.get(path, params={param: value}, stream=True)
                answer.close()
                assert answer.status_code < 500, (path, param, value)
    for ref in ("²", huge, f"{pid}:{huge}", "-1", f"{pid}:²"):
        for path in (f"/api/v0/executions/{ref}/", f"/api/v0/tasks/{ref}/", f"/api/v0/projects/{ref}/"):
            assert mallory.get(path).status_code == 404, path
    answer = mallory.post("/api/v0/executions/", json={"project": int(huge), "commit": world.commit, "step": "hello"})
    assert answer.status_code == 404


OPENED = b"retry: 1000\n\n"  # what a stream sends first


def test_live_streams_are_capped_per_user_and_freed_when_one_closes(world: World) -> None:
    mallory = world.mallory
    idle = submit(world, "idle")
    url = mallory.url(f"/api/v0/executions/{idle['id']}/stream/")
    held: list[requests.Response] = []
    try:
        for _ in range(8):
            answer = requests.get(url, headers=mallory.headers, stream=True, timeout=TIMEOUT)
            assert answer.status_code == 200
            assert answer.raw.read(len(OPENED)) == OPENED  # (iter_content's end would close it)
            held.append(answer)
        refused = requests.get(url, headers=mallory.headers, timeout=TIMEOUT)
        assert refused.status_code == 429
        assert "8 live streams" in message(refused, "non_field_errors")
        held.pop().close()  # a client goes away: its slot comes back within a poll of the stream
        deadline = time.monotonic() + 20
        while True:
            answer = requests.get(url, headers=mallory.headers, stream=True, timeout=TIMEOUT)
            if answer.status_code == 200:
                held.append(answer)
                break
            answer.close()
            assert answer.status_code == 429 and time.monotonic() < deadline, "the closed stream kept its slot"
            time.sleep(0.2)
    finally:
        for answer in held:
            answer.close()
        world.vh("exec", "stop", str(idle["id"]))

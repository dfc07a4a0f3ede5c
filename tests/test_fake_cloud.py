"""The fake cloud with a state file: one cloud shared by several processes, as daemon replicas share one.

The processes here are real ones (this interpreter, started with `python -c`), each with its
own FakeCloud on the same file, so the file lock and the id counter are what keeps them apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vh_orch.cloud_drivers.base import TAG_CLUSTER, TAG_ENVIRONMENT, TAG_MACHINE, LaunchSpec
from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver
from vh_orch.errors import CloudError
from vh_orch.values import TERMINATED

# argv: state file, then a command: `launch FIRST_MACHINE COUNT`, `list` or `terminate ID...`.
# Prints the instance ids it launched, or the {id: state} it lists, as JSON.
CHILD = """
import json, sys
from vh_orch.cloud_drivers.base import LaunchSpec
from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver
driver = FakeDriver(FakeCloud(state_file=sys.argv[1]), "cluster-1", "gpu", boot_seconds=0)
command, args = sys.argv[2], sys.argv[3:]
if command == "launch":
    first, count = int(args[0]), int(args[1])
    ids = [driver.launch(LaunchSpec(machine_id=m, launch_token=f"token-{m}", cluster_id="cluster-1",
                                    environment="gpu", zone="fake-a", instance_type="small")).instance_id
           for m in range(first, first + count)]
    print(json.dumps(ids))
elif command == "list":
    print(json.dumps({i.instance_id: i.state for i in driver.list_instances()}))
elif command == "terminate":
    driver.terminate(args)
    print("[]")
"""


def start(state_file: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(state_file), *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str]) -> object:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def run(state_file: Path, *args: str) -> object:
    return finish(start(state_file, *args))


def test_two_processes_launching_into_one_state_file_get_distinct_ids_and_both_see_every_instance(
        tmp_path: Path) -> None:
    state = tmp_path / "cloud" / "fake.json"  # the folder is made on first use
    first, second = start(state, "launch", "1", "30"), start(state, "launch", "101", "30")
    ids_a, ids_b = finish(first), finish(second)
    assert isinstance(ids_a, list) and isinstance(ids_b, list)
    assert len(set(ids_a) | set(ids_b)) == 60, "an instance id was handed out twice"

    # Two more processes, each listing: both see all 60, booted (boot_seconds=0).
    seen_a, seen_b = finish(start(state, "list")), finish(start(state, "list"))
    assert seen_a == seen_b and set(seen_a) == set(ids_a) | set(ids_b)  # type: ignore[arg-type]
    assert set(seen_a.values()) == {"running"}  # type: ignore[union-attr]

    # And so does this process, with the tags each launch carried.
    here = FakeCloud(state_file=state).launched()
    assert sorted(int(i.tags[TAG_MACHINE]) for i in here) == [*range(1, 31), *range(101, 131)]
    assert all(i.launch_token == f"token-{i.tags[TAG_MACHINE]}" for i in here)
    assert {(i.tags[TAG_CLUSTER], i.tags[TAG_ENVIRONMENT]) for i in here} == {("cluster-1", "gpu")}


def test_a_termination_in_one_process_is_seen_by_another_and_the_record_keeps_the_instance(tmp_path: Path) -> None:
    state = tmp_path / "fake.json"
    kept, ended = run(state, "launch", "1", "2")  # type: ignore[misc]
    run(state, "terminate", ended)
    assert run(state, "list") == {kept: "running", ended: TERMINATED}

    record = json.loads(state.read_text())
    terminated = next(i for i in record["instances"] if i["instance_id"] == ended)
    assert terminated["state"] == TERMINATED and terminated["state_reason"] == "terminated on request"
    assert terminated["tags"][TAG_MACHINE] == "2" and terminated["launch_token"] == "token-2"
    assert terminated["terminated_at"].endswith("+00:00"), "datetimes are ISO strings"
    assert [i.instance_id for i in FakeCloud(state_file=state).live()] == [kept]


def test_a_spot_interruption_scheduled_by_one_process_fires_in_another(tmp_path: Path) -> None:
    state = tmp_path / "fake.json"
    launcher = FakeDriver(FakeCloud(state_file=state), "cluster-1", "gpu", boot_seconds=0,
                          interrupt_after=0, interrupt_count=1)
    inst = launcher.launch(LaunchSpec(machine_id=1, launch_token="t", cluster_id="cluster-1", environment="gpu",
                                      zone=None, instance_type=None))
    assert run(state, "list") == {inst.instance_id: TERMINATED}
    (record,) = FakeCloud(state_file=state).launched()
    assert record.state_reason == "Server.SpotInstanceTermination"


def test_a_launch_that_fails_after_the_instance_was_made_still_records_the_instance(tmp_path: Path) -> None:
    cloud = FakeCloud(state_file=tmp_path / "fake.json")
    cloud.faults.raise_after_launch = 1
    with pytest.raises(CloudError, match="connection reset"):
        cloud.run_instance(LaunchSpec(machine_id=7, launch_token="t", cluster_id="c", environment="gpu",
                                      zone=None, instance_type=None), boot_seconds=0)
    assert [i.tags[TAG_MACHINE] for i in FakeCloud(state_file=tmp_path / "fake.json").live()] == ["7"]


def test_an_unreadable_state_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    state = tmp_path / "fake.json"
    state.write_text("{not json")
    with pytest.raises(CloudError, match=f"state file {state} is unreadable.*delete it"):
        FakeCloud(state_file=state).live()
    assert state.read_text() == "{not json", "a file it cannot read is left as it was"


def test_named_clouds_are_one_per_state_file_and_otherwise_one_per_region(tmp_path: Path) -> None:
    FakeCloud.reset()
    try:
        shared = str(tmp_path / "fake.json")
        assert FakeCloud.named("eu", state_file=shared) is FakeCloud.named("us", state_file=shared)
        assert FakeCloud.named("eu") is not FakeCloud.named("us")
        assert FakeCloud.named("eu") is not FakeCloud.named("eu", state_file=shared)
    finally:
        FakeCloud.reset()


def test_an_environment_with_a_state_file_gets_a_driver_on_that_file(tmp_path: Path) -> None:
    from vh_orch.cloud_drivers import make_driver
    from vh_orch.config.environments import parse_entry
    from vh_orch.orchestrator.drivers import driver_spec
    from vh_orch.orchestrator.models import Environment

    state = tmp_path / "fake.json"
    spec = parse_entry({"name": "gpu", "cloud": "fake", "fake": {"state_file": str(state)}}, "test")
    FakeCloud.reset()
    try:
        driver = make_driver(driver_spec(Environment(name="gpu", cloud="fake", settings=spec.settings)), "cluster-1")
        assert driver is not None
        driver.launch(LaunchSpec(machine_id=1, launch_token="t", cluster_id="cluster-1", environment="gpu",
                                 zone=None, instance_type=None))
    finally:
        FakeCloud.reset()
    assert list(run(state, "list").values()) == ["running"]  # type: ignore[union-attr]

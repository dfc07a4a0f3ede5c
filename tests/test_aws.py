"""The `aws` driver against moto's EC2 over real HTTP (through the fault proxy).

Reconcile passes run in this process with real SQLite state and a clock the test
moves; executions are "run" by a stand-in host. The end-to-end tests, with `vh-orch
serve`, SSH and Docker, are in test_aws_e2e.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from conftest import VhOrch
from cloudworld import CloudWorld, key_file  # noqa: F401 (a fixture)
from vh_orch.cloud_drivers.aws import AWSDriver
from vh_orch.cloud_drivers.vm import TAG_HOST_KEY
from vh_orch.config.environments import parse_entry
from vh_orch.errors import ConfigError
from vh_orch.orchestrator.drivers import driver_spec

REGION = "eu-west-1"


class AWSWorld(CloudWorld):
    def __init__(self, tmp_path: Path, moto, key_file: Path, **keys) -> None:  # type: ignore[no-untyped-def]
        self.moto = moto
        aws = {"ami": moto.default_ami(), "zones": [f"{REGION}a", f"{REGION}b"], "endpoint_url": moto.url,
               "tags": {"team": "ml"}}
        aws.update(keys.pop("aws", {}))
        entry = {"name": "gpu", "cloud": "aws", "region": REGION, "instance_type": "g5.xlarge", "max_scale": 2,
                 "idle_timeout": "10m", "price_per_hour": 1.006, "aws": aws,
                 "ssh": {"user": "ubuntu", "private_key_file": str(key_file)}}
        entry.update(keys)
        super().__init__(tmp_path, entry)

    def instances(self, *states: str) -> list[dict]:  # type: ignore[type-arg]
        pages = self.moto.client("ec2").describe_instances()["Reservations"]
        found = [i for r in pages for i in r["Instances"]]
        return [i for i in found if not states or i["State"]["Name"] in states]

    def launches(self) -> list:  # type: ignore[type-arg]
        return self.moto.proxy.actions("RunInstances")


@pytest.fixture
def world(tmp_path: Path, moto, key_file: Path) -> AWSWorld:  # type: ignore[no-untyped-def]
    return AWSWorld(tmp_path, moto, key_file)


def tags_of(instance: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_launch_tags_user_data_list_and_terminate(world: AWSWorld, key_file: Path) -> None:
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    (instance,) = world.instances("pending", "running")
    assert machine.instance_id == instance["InstanceId"] and machine.zone == f"{REGION}a"
    tags = tags_of(instance)
    assert tags["vh-orch-cluster"] == world.store.cluster_id()
    assert tags["vh-orch-machine"] == str(machine.id)
    assert tags["vh-orch-environment"] == "gpu"
    assert tags["team"] == "ml" and tags["Name"] == f"vh-orch-gpu-{machine.id}"
    assert instance["InstanceType"] == "g5.xlarge"
    (call,) = world.launches()
    assert call.params["ClientToken"] == machine.launch_token
    assert call.params["Placement.AvailabilityZone"] == f"{REGION}a"
    assert call.params["InstanceInitiatedShutdownBehavior"] == "terminate"
    # IMDSv2 only, its token one hop away at most: a container behind the bridge never gets one.
    assert call.params["MetadataOptions.HttpTokens"] == "required"
    assert call.params["MetadataOptions.HttpPutResponseHopLimit"] == "1"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    # The user-data installs the host key pinned in the tag, and vh-orch's login key.
    user_data = base64.b64decode(world.moto.client("ec2").describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData")["UserData"]["Value"]).decode()
    assert user_data.startswith("#cloud-config")
    assert tags[TAG_HOST_KEY].startswith("ssh-ed25519 ") and tags[TAG_HOST_KEY] in user_data
    assert "BEGIN OPENSSH PRIVATE KEY" in user_data
    assert " ".join(Path(f"{key_file}.pub").read_text().split()[:2]) in user_data
    # Listing finds it by tag; an instance of another cluster is never listed.
    world.moto.client("ec2").run_instances(ImageId=instance["ImageId"], MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "vh-orch-cluster", "Value": "someone-else"},
                                              {"Key": "vh-orch-environment", "Value": "gpu"}]}])
    driver = world.reconciler.drivers.driver(world.env)
    assert [i.instance_id for i in driver.list_instances()] == [instance["InstanceId"]]
    driver.terminate([instance["InstanceId"]])
    (listed,) = driver.list_instances()
    assert listed.gone
    assert len(world.instances("running")) == 1, "the other cluster's instance is untouched"


def test_spot_root_volume_and_subnets_reach_run_instances(tmp_path: Path, moto, key_file: Path) -> None:  # type: ignore[no-untyped-def]
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone=f"{REGION}b")["Subnet"]
    w = AWSWorld(tmp_path, moto, key_file, spot=True,
                 aws={"zones": None, "subnet_ids": [subnet["SubnetId"]], "root_volume_gb": 100,
                      "spot_max_price": 0.5})
    w.submit(1)
    w.run(1)
    (call,) = w.launches()
    p = call.params
    assert p["SubnetId"] == subnet["SubnetId"] and "Placement.AvailabilityZone" not in p
    assert p["InstanceMarketOptions.MarketType"] == "spot"
    assert p["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.5"
    assert p["BlockDeviceMapping.1.Ebs.VolumeSize"] == "100"
    (machine,) = w.machines()
    assert machine.zone == f"{REGION}b" and machine.instance_id


def test_the_gpus_of_an_instance_type_are_known_before_its_machines_boot(world: AWSWorld) -> None:
    world.submit(2)
    world.run(1)
    # g5.xlarge: one NVIDIA A10G in EC2's DescribeInstanceTypes, asked once for both machines.
    assert [(m.state, m.gpus) for m in world.machines()] == [("provisioning", 1)] * 2
    assert len(world.moto.proxy.actions("DescribeInstanceTypes")) == 1
    assert world.driver.expected_gpus("g4dn.12xlarge") == 4
    assert world.driver.expected_gpus("t3.micro") == 0
    assert world.driver.expected_gpus("p3.8xlarge") is None  # a type this region (moto's catalogue) lacks


def test_an_instance_type_ec2_will_not_describe_launches_with_its_gpus_unknown(world: AWSWorld) -> None:
    world.moto.proxy.fail("DescribeInstanceTypes", "UnauthorizedOperation", status=403, times=1,
                          message="You are not authorized to perform this operation.")
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    assert machine.instance_id and machine.gpus == 0, "the launch goes on; the bootstrap finds the GPUs"
    assert world.driver.expected_gpus("g5.xlarge") == 1, "an error is not remembered"


def test_a_crash_between_the_cloud_call_and_the_database_update_leaves_one_instance(world: AWSWorld) -> None:
    world.submit(1)
    world.crash_after_the_cloud_call()
    (row,) = world.machines()
    assert row.state == "requested" and row.instance_id is None, "the row never heard of its instance"
    assert len(world.instances("pending", "running")) == 1
    # The next daemon finds the instance by its tags (moto ignores ClientToken: only the tags protect us).
    world.reconciler = world.new_reconciler()
    for _ in range(5):
        world.run(1, step_s=30)
    (row,) = world.machines()
    (instance,) = world.instances("pending", "running")
    assert row.instance_id == instance["InstanceId"]
    assert row.state in ("provisioning", "bootstrapping")
    assert len(world.launches()) == 1, "no second launch for the same row"


def test_a_capacity_error_in_the_first_zone_moves_to_the_second(world: AWSWorld) -> None:
    world.moto.proxy.fail("RunInstances", "InsufficientInstanceCapacity", contains=f"{REGION}a",
                          message="We currently do not have sufficient g5.xlarge capacity in eu-west-1a.")
    world.submit(1)
    world.run(3)
    (machine,) = world.machines("provisioning", "bootstrapping")
    assert machine.zone == f"{REGION}b"
    (instance,) = world.instances("running")
    assert instance["Placement"]["AvailabilityZone"] == f"{REGION}b"
    failures = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert [(f.kind, f.zone) for f in failures] == [("capacity", f"{REGION}a")]
    assert "InsufficientInstanceCapacity" in failures[0].message


def test_a_capacity_error_for_every_zone_falls_back_to_the_next_instance_type(
        tmp_path: Path, moto, key_file: Path) -> None:  # type: ignore[no-untyped-def]
    w = AWSWorld(tmp_path, moto, key_file, instance_type=["g5.xlarge", "g6.xlarge"])
    moto.proxy.fail("RunInstances", "InsufficientInstanceCapacity", contains="InstanceType=g5.xlarge")
    w.submit(1)
    w.run(4)
    (instance,) = w.instances("running")
    assert instance["InstanceType"] == "g6.xlarge"


def test_quota_exceeded_blocks_launching_and_status_shows_why(world: AWSWorld, tmp_path: Path) -> None:
    world.moto.proxy.fail("RunInstances", "VcpuLimitExceeded",
                          message="You have requested more vCPU capacity than your current vCPU limit of 0 allows")
    world.submit(2)
    world.run(5)
    assert world.instances() == []
    assert len(world.launches()) == 1, "after a quota error nothing more is tried while the block lasts"
    status = VhOrch(tmp_path)("status")
    assert "VcpuLimitExceeded" in status.stdout and "quota" in status.stdout
    world.moto.proxy.clear()
    world.clock.advance(world.env.settings["capacity_block_s"])
    world.run(2)
    assert len(world.instances("running")) == 2


def test_request_limit_exceeded_backs_off(world: AWSWorld) -> None:
    world.moto.proxy.fail("RunInstances", "RequestLimitExceeded", status=503, message="Request limit exceeded.")
    world.submit(1)
    world.run(1)
    tried = len(world.launches())
    assert tried >= 1  # botocore itself retries a throttled call once
    world.run(3, step_s=1)
    assert len(world.launches()) == tried, "no new attempt while backing off"
    assert [m.state for m in world.machines()] == ["failed"], "a throttled launch surely made nothing"
    world.moto.proxy.clear()
    world.run(30, step_s=5)
    assert len(world.instances("running")) == 1
    failures = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert failures[0].kind == "transient" and "RequestLimitExceeded" in failures[0].message


def test_an_instance_terminated_behind_our_back_makes_the_machine_lost_and_requeues(world: AWSWorld) -> None:
    (eid,) = world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    world.store.advance_machine(machine.id, "ready", "ready", None)  # as if bootstrapped  # type: ignore[arg-type]
    world.run(1)
    assert world.store.get_execution(eid).status == "started"
    world.moto.client("ec2").terminate_instances(InstanceIds=[machine.instance_id])
    world.run(1)
    lost = world.machine(machine.id)  # type: ignore[arg-type]
    assert lost.state == "lost" and "terminated" in (lost.reason or "")
    assert world.host.abandoned == [eid]
    execution = world.store.get_execution(eid)
    assert execution.status == "queued" and "requeued" in (execution.status_reason or "")
    world.run(1)
    assert len(world.instances("running")) == 1, "a new machine for the requeued execution"


def test_a_stopped_instance_is_lost_and_then_terminated(world: AWSWorld) -> None:
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    world.moto.client("ec2").stop_instances(InstanceIds=[machine.instance_id])
    world.run(3)
    assert world.machine(machine.id).state == "lost"  # type: ignore[arg-type]
    states = {i["InstanceId"]: i["State"]["Name"] for i in world.instances()}
    assert states[machine.instance_id] in ("shutting-down", "terminated"), "a parked instance still costs"


def test_fatal_errors_stop_launching_with_aws_message(world: AWSWorld) -> None:
    world.moto.proxy.fail("RunInstances", "UnauthorizedOperation", status=403,
                          message="You are not authorized to perform this operation.")
    world.submit(1)
    world.run(4)
    assert len(world.launches()) == 1
    (failure,) = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert failure.kind == "fatal" and "UnauthorizedOperation: You are not authorized" in failure.message


def test_retiring_terminates_and_the_listing_confirms(world: AWSWorld) -> None:
    (eid,) = world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    world.store.advance_machine(machine.id, "ready", "ready", None)  # type: ignore[arg-type]
    world.run(1)
    world.host.complete_all()
    world.run(1)
    world.clock.advance(601)
    world.run(3)
    assert world.machine(machine.id).state == "terminated"  # type: ignore[arg-type]
    assert world.instances("pending", "running") == []
    assert world.moto.proxy.actions("TerminateInstances")


def test_terminating_many_instances_goes_in_batches(world: AWSWorld) -> None:
    ec2 = world.moto.client("ec2")
    reply = ec2.run_instances(ImageId=world.env.settings["aws"]["ami"], MinCount=3, MaxCount=3)
    ids = [i["InstanceId"] for i in reply["Instances"]]
    driver = world.reconciler.drivers.driver(world.env)
    driver.terminate(ids + ["i-0123456789abcdef0"])  # one that does not exist does not stop the others
    assert {i["State"]["Name"] for i in world.instances() if i["InstanceId"] in ids} <= {"shutting-down",
                                                                                       "terminated"}


def test_bad_aws_environments_are_refused(tmp_path: Path, key_file: Path) -> None:
    base = {"name": "a", "cloud": "aws", "region": REGION, "instance_type": "t3.micro",
            "aws": {"ami": "ami-12345678"}, "ssh": {"private_key_file": str(key_file)}}
    cases = [
        ({"aws": {"ami": "ubuntu"}}, "not an AMI id"),
        ({"region": None}, "needs a region"),
        ({"instance_type": None}, "needs an instance type"),
        ({"ssh": {"user": "ubuntu"}}, "private_key_file"),
        ({"aws": {"ami": "ami-12345678", "zones": ["eu-west-1a"], "subnet_ids": ["subnet-1"]}}, "not both"),
        ({"aws": {"ami": "ami-12345678", "tags": {"vh-orch-cluster": "x"}}}, "reserved"),
        ({"aws": {"ami": "ami-12345678", "root_volume_gb": 2}}, "root_volume_gb"),
        ({"aws": {"ami": "ami-12345678", "endpoint_url": "ftp://x"}}, "endpoint_url"),
        ({"ssh": {"private_key_file": str(key_file), "address": "elsewhere"}}, "public"),
        ({"ssh": {"private_key_file": str(key_file), "endpoint_resolver": "os.system('x')"}}, "module:function"),
        ({"aws": {"ami": "ami-12345678", "bogus": 1}}, "unknown key 'bogus'"),
    ]
    for change, message in cases:
        entry = {**base, **{k: v for k, v in change.items() if v is not None}}
        for k, v in change.items():
            if v is None:
                entry.pop(k)
        with pytest.raises(ConfigError, match=message):
            parse_entry(entry, "test")


def test_the_driver_needs_a_region_and_reads_credentials_only_from_boto3(world: AWSWorld) -> None:
    driver = world.reconciler.drivers.driver(world.env)
    assert isinstance(driver, AWSDriver)
    assert world.env.settings["aws"].keys().isdisjoint({"access_key", "secret_key", "aws_access_key_id"})
    env = world.store.get_environment("gpu")
    env.region = None
    with pytest.raises(ConfigError, match="region"):
        AWSDriver("c", driver_spec(env))


def test_status_shows_the_aws_machines_and_cost(world: AWSWorld, tmp_path: Path) -> None:
    world.submit(2)
    world.run(2)
    (row,) = [r for r in VhOrch(tmp_path).json("status", "--json") if r["environment"] == "gpu"]
    assert row["cost_per_hour"] == pytest.approx(2 * 1.006)
    assert sum(row["machines"].values()) == 2
    text = VhOrch(tmp_path)("status").stdout
    assert "gpu" in text and "2.01" in text


"""The `gcp` driver: the real google-cloud-compute client against the fake Compute API.

Reconcile passes run in this process (tests/cloudworld.py); the end-to-end test runs
`vh-orch serve` with SSH and Docker, each fake VM mapped to a loopback sshd host.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import pytest

from cloudworld import CloudWorld, key_file  # noqa: F401 (a fixture)
from conftest import SSHPool, VhOrch, make_project
from test_aws_e2e import STEPS, peak, stamp
from test_ssh_pool import logs
from vh_orch.cloud_drivers.vm import TAG_HOST_KEY
from vh_orch.config.environments import parse_entry
from vh_orch.errors import ConfigError

PROJECT = "vh-test-project"
ZONES = ["us-central1-a", "us-central1-b"]


def gcp_entry(gce, key_file: Path, **keys) -> dict:  # type: ignore[no-untyped-def,type-arg]
    gcp = {"project": PROJECT, "zones": ZONES, "api_endpoint": gce.url, "credentials": "anonymous",
           "labels": {"team": "ml"}, "disk_gb": 100}
    gcp.update(keys.pop("gcp", {}))
    entry = {"name": "gpu", "cloud": "gcp", "region": "us-central1", "instance_type": "g2-standard-8",
             "max_scale": 2, "idle_timeout": "10m", "price_per_hour": 0.85, "gcp": gcp,
             "ssh": {"user": "vh", "private_key_file": str(key_file)}}
    entry.update(keys)
    return entry


class GCPWorld(CloudWorld):
    def __init__(self, tmp_path: Path, gce, key_file: Path, **keys) -> None:  # type: ignore[no-untyped-def]
        self.gce = gce
        super().__init__(tmp_path, gcp_entry(gce, key_file, **keys))

    def instances(self, *statuses: str) -> list[dict]:  # type: ignore[type-arg]
        return [i for i in self.gce.instances() if not statuses or i["status"] in statuses]

    def inserts(self) -> list:  # type: ignore[type-arg]
        return self.gce.calls("insert")


@pytest.fixture
def world(tmp_path: Path, gce, key_file: Path) -> GCPWorld:  # type: ignore[no-untyped-def]
    return GCPWorld(tmp_path, gce, key_file)


def metadata_of(instance: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {i["key"]: i["value"] for i in instance.get("metadata", {}).get("items", [])}


def test_insert_labels_metadata_list_and_delete(world: GCPWorld, key_file: Path) -> None:
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    (instance,) = world.instances()
    assert machine.instance_id == f"{ZONES[0]}/{instance['name']}" and machine.zone == ZONES[0]
    labels = instance["labels"]
    assert labels["vh-orch-cluster"] == world.store.cluster_id()
    assert labels["vh-orch-machine"] == str(machine.id) and labels["vh-orch-environment"] == "gpu"
    assert labels["team"] == "ml"
    assert instance["machineType"].endswith(f"zones/{ZONES[0]}/machineTypes/g2-standard-8")
    (call,) = world.inserts()
    assert call.query["requestId"] == str(uuid.UUID(hex=machine.launch_token))
    assert call.body["disks"][0]["initializeParams"]["diskSizeGb"] == "100"
    # The host key pinned in the metadata is the one the startup script installs, with our login key.
    metadata = metadata_of(instance)
    host_key = metadata[TAG_HOST_KEY]
    assert host_key.startswith("ssh-ed25519 ") and host_key in metadata["startup-script"]
    assert " ".join(Path(f"{key_file}.pub").read_text().split()[:2]) in metadata["startup-script"]
    assert metadata["enable-oslogin"] == "FALSE"
    # Listing finds it by label across zones; another cluster's VM is never listed.
    world.gce.client().insert_unary(project=PROJECT, zone=ZONES[1], instance_resource={
        "name": "someone-else", "machine_type": f"zones/{ZONES[1]}/machineTypes/e2-small",
        "labels": {"vh-orch-cluster": "vh-other", "vh-orch-environment": "gpu"}})
    assert [i.instance_id for i in world.driver.list_instances()] == [machine.instance_id]
    world.driver.terminate([machine.instance_id])
    world.gce.advance(60)
    assert world.driver.list_instances() == []
    assert [i["name"] for i in world.instances()] == ["someone-else"], "the other cluster's VM is untouched"


def test_spot_gpus_and_service_account_reach_the_insert(tmp_path: Path, gce, key_file: Path) -> None:  # type: ignore[no-untyped-def]
    w = GCPWorld(tmp_path, gce, key_file, spot=True,
                 gcp={"accelerators": [{"type": "nvidia-l4", "count": 1}],
                      "service_account": "runner@vh-test-project.iam.gserviceaccount.com"})
    w.submit(1)
    w.run(1)
    (call,) = w.inserts()
    body = call.body
    assert body["scheduling"]["provisioningModel"] == "SPOT"
    assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert body["guestAccelerators"] == [{"acceleratorType": f"zones/{ZONES[0]}/acceleratorTypes/nvidia-l4",
                                          "acceleratorCount": 1}]
    assert body["serviceAccounts"][0]["email"] == "runner@vh-test-project.iam.gserviceaccount.com"


def test_a_machine_type_with_gpus_built_in_expects_them_and_never_migrates(world: GCPWorld) -> None:
    world.submit(2)
    world.run(1)
    # g2-standard-8 has one L4 built in (machineTypes.get), known before the machines boot.
    assert [m.gpus for m in world.machines()] == [1, 1]
    for call in world.inserts():
        assert call.body["scheduling"]["onHostMaintenance"] == "TERMINATE", "GPUs cannot live-migrate"
        assert call.body["scheduling"]["automaticRestart"] is False
        # GCE's Deep Learning images install the driver at first boot when asked to.
        assert metadata_of(call.body)["install-nvidia-driver"] == "True"
    assert len(world.gce.calls("getMachineType")) == 1, "asked once per machine type"
    assert world.driver.expected_gpus("a2-highgpu-4g") == 4
    assert world.driver.expected_gpus("e2-standard-2") == 0


def test_a_cpu_machine_type_migrates_and_attached_accelerators_count(tmp_path: Path, gce, key_file: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cpu").mkdir()
    (tmp_path / "n1").mkdir()
    cpu = GCPWorld(tmp_path / "cpu", gce, key_file, instance_type="e2-standard-4")
    cpu.submit(1)
    cpu.run(1)
    ((machine,), (call,)) = cpu.machines(), cpu.inserts()
    assert machine.gpus == 0 and call.body["scheduling"]["onHostMaintenance"] == "MIGRATE"
    assert "install-nvidia-driver" not in metadata_of(call.body)
    gce.reset()
    n1 = GCPWorld(tmp_path / "n1", gce, key_file, instance_type="n1-standard-8",
                  gcp={"accelerators": [{"type": "nvidia-tesla-t4", "count": 2}]})
    n1.submit(1)
    n1.run(1)
    ((machine,), (call,)) = n1.machines(), n1.inserts()
    assert machine.gpus == 2 and call.body["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_a_machine_type_that_cannot_be_looked_up_is_not_launched_blind(world: GCPWorld) -> None:
    """Without its GPUs known the insert could ask a GPU VM to live-migrate: the launch waits for the lookup."""
    world.gce.fail("getMachineType", 503, times=2)  # the expected count, then the launch's own lookup
    world.submit(1)
    world.run(1)
    assert [m.state for m in world.machines()] == ["failed"] and world.inserts() == []
    (failure,) = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert failure.kind == "transient" and "looking up machine type g2-standard-8" in failure.message
    world.run(30, step_s=5)
    (instance,) = world.instances()
    assert instance["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_a_crash_between_the_insert_and_the_database_update_leaves_one_instance(world: GCPWorld) -> None:
    world.submit(1)
    world.crash_after_the_cloud_call()
    (row,) = world.machines()
    assert row.state == "requested" and row.instance_id is None
    assert len(world.instances()) == 1
    world.reconciler = world.new_reconciler()
    world.run(5, step_s=30)
    (row,) = world.machines()
    (instance,) = world.instances()
    assert row.instance_id == f"{ZONES[0]}/{instance['name']}"
    assert len(world.inserts()) == 1, "no second insert for the same row"


def test_a_lost_answer_is_repaired_by_the_request_id(world: GCPWorld) -> None:
    """The insert happened but its answer was lost: the retry with the same requestId creates nothing new."""
    world.gce.fail("insert", 503, times=1, applied=True)
    world.submit(1)
    world.run(1)
    world.run(40, step_s=5)
    assert len(world.instances()) == 1
    assert len([m for m in world.machines() if m.instance_id]) == 1


def test_a_capacity_error_in_the_done_operation_moves_to_the_next_zone(world: GCPWorld) -> None:
    world.gce.fail_operation("ZONE_RESOURCE_POOL_EXHAUSTED", zone=ZONES[0],
                             message="The zone does not have enough resources available to fulfill the request.")
    world.submit(1)
    world.run(3)
    (machine,) = world.machines("provisioning", "bootstrapping")
    assert machine.zone == ZONES[1]
    (instance,) = world.instances()
    assert instance["zone"].endswith(ZONES[1])
    failures = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert [(f.kind, f.zone) for f in failures] == [("capacity", ZONES[0])]
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in failures[0].message


def test_a_launch_does_not_wait_for_its_operation(world: GCPWorld) -> None:
    world.gce.operation_seconds = 30.0
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    assert machine.instance_id and machine.state == "provisioning"
    assert world.gce.calls("wait") == [], "the pass went on while the insert ran"
    world.gce.advance(31)
    world.run(2)
    (machine,) = world.machines()
    assert machine.state == "bootstrapping" and len(world.instances()) == 1


def test_a_capacity_error_reported_after_the_insert_moves_to_the_next_zone(world: GCPWorld) -> None:
    world.gce.operation_seconds = 30.0
    world.gce.fail_operation("ZONE_RESOURCE_POOL_EXHAUSTED", zone=ZONES[0],
                             message="The zone does not have enough resources available to fulfill the request.")
    world.submit(1)
    world.run(1)
    (first,) = world.machines()
    assert first.zone == ZONES[0] and first.state == "provisioning"
    world.gce.advance(31)
    world.run(2)
    failed = world.machine(first.id)  # type: ignore[arg-type]
    assert failed.state == "failed" and "ZONE_RESOURCE_POOL_EXHAUSTED" in (failed.reason or "")
    (second,) = world.machines("provisioning", "bootstrapping")
    assert second.zone == ZONES[1]
    failures = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert [(f.kind, f.zone) for f in failures] == [("capacity", ZONES[0])]


def test_quota_exceeded_blocks_launching_and_status_shows_why(world: GCPWorld, tmp_path: Path) -> None:
    world.gce.fail_operation("QUOTA_EXCEEDED", message="Quota 'NVIDIA_L4_GPUS' exceeded. Limit: 0.0 in region "
                                                       "us-central1.")
    world.submit(2)
    world.run(5)
    assert world.instances() == []
    assert len(world.inserts()) == 1
    status = VhOrch(tmp_path)("status").stdout
    assert "QUOTA_EXCEEDED" in status and "quota" in status
    world.gce.reset()
    world.clock.advance(world.env.settings["capacity_block_s"])
    world.run(2)
    assert len(world.instances()) == 2


def test_rate_limits_back_off(world: GCPWorld) -> None:
    world.gce.fail("insert", 429, reason="rateLimitExceeded", message="Rate Limit Exceeded")
    world.submit(1)
    world.run(1)
    tried = len(world.inserts())
    assert tried >= 1
    world.run(3)
    assert len(world.inserts()) == tried, "no new attempt while backing off"
    world.gce.rules.clear()
    world.run(30, step_s=5)
    assert len(world.instances()) == 1
    failures = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert failures[0].kind == "transient" and "Rate Limit Exceeded" in failures[0].message


def test_permission_errors_are_fatal_with_googles_message(world: GCPWorld) -> None:
    world.gce.fail("insert", 403, reason="forbidden",
                   message="Required 'compute.instances.create' permission for 'projects/vh-test-project'")
    world.submit(1)
    world.run(4)
    assert len(world.inserts()) == 1
    (failure,) = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert failure.kind == "fatal" and "compute.instances.create" in failure.message


@pytest.mark.parametrize("action", ["STOP", "DELETE"])
def test_a_preempted_spot_vm_is_lost_and_its_execution_requeued(tmp_path: Path, gce, key_file: Path,  # type: ignore[no-untyped-def]
                                                                  action: str) -> None:
    w = GCPWorld(tmp_path, gce, key_file, spot=True)
    (eid,) = w.submit(1)
    w.run(1)
    (machine,) = w.machines()
    w.store.advance_machine(machine.id, "ready", "ready", None)  # as if bootstrapped  # type: ignore[arg-type]
    w.run(1)
    assert w.store.get_execution(eid).status == "started"
    gce.preempt(machine.instance_id.split("/")[1], action=action)  # type: ignore[union-attr]
    w.run(1)
    lost = w.machine(machine.id)  # type: ignore[arg-type]
    assert lost.state == "lost"
    assert w.host.abandoned == [eid]
    assert w.store.get_execution(eid).status == "queued"
    gce.advance(60)
    w.run(1)
    names = [i["name"] for i in w.instances() if i["status"] != "STOPPING"]
    assert machine.instance_id.split("/")[1] not in names, "a preempted VM does not linger"  # type: ignore[union-attr]
    assert len(names) == 1, "a new VM for the requeued execution"


def test_retiring_deletes_and_the_listing_confirms(world: GCPWorld) -> None:
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    world.store.advance_machine(machine.id, "ready", "ready", None)  # type: ignore[arg-type]
    world.run(1)
    world.host.complete_all()
    world.run(1)
    world.clock.advance(601)
    world.run(2)
    world.gce.advance(60)
    world.run(2)
    assert world.machine(machine.id).state == "terminated"  # type: ignore[arg-type]
    assert world.instances() == []


def test_bad_gcp_environments_are_refused(key_file: Path) -> None:
    base = gcp_entry(type("G", (), {"url": "http://127.0.0.1:9"})(), key_file)
    cases = [
        ({"gcp": {"zones": ZONES}}, "project"),
        ({"gcp": {"project": PROJECT}}, "zones"),
        ({"gcp": {"project": PROJECT, "zones": ["us central"]}}, "zones"),
        ({"gcp": {"project": PROJECT, "zones": ZONES, "credentials": "anonymous"}}, "api_endpoint"),
        ({"gcp": {"project": PROJECT, "zones": ZONES, "labels": {"Team": "ML"}}}, "labels"),
        ({"gcp": {"project": PROJECT, "zones": ZONES, "labels": {"vh-orch-cluster": "x"}}}, "reserved"),
        ({"gcp": {"project": PROJECT, "zones": ZONES, "accelerators": [{"type": "nvidia-l4", "count": 0}]}},
         "accelerators"),
        ({"gcp": {"project": PROJECT, "zones": ZONES, "disk_gb": 5}}, "disk_gb"),
        ({"gcp": {"project": PROJECT, "zones": ZONES, "image": "debian"}}, "image"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_entry({**base, **change}, "test")


@pytest.fixture
def gcp_vh(vh: VhOrch, tmp_path: Path, gce, ssh_pool: SSHPool, docker_images: None) -> VhOrch:  # type: ignore[no-untyped-def]
    vh.env["VH_TEST_SSH_HOSTS"] = json.dumps(
        [{"host": h.address, "port": h.port, "host_key": h.host_key} for h in ssh_pool.hosts])
    entry = gcp_entry(gce, ssh_pool.client_key, name="gcp-cpu", instance_type="e2-standard-2", max_scale=3,
                      idle_timeout="3s", pull_policy="never", price_per_hour=0.067)
    entry["ssh"] = {"user": "root", "private_key_file": str(ssh_pool.client_key), "connect_timeout": "3s",
                    "endpoint_resolver": "vh_test_resolvers:test_host", "workdir": str(tmp_path / "workdir")}
    (tmp_path / "gcp.yaml").write_text(json.dumps({"environments": [entry]}))
    vh("env", "apply", str(tmp_path / "gcp.yaml"))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    return vh


def test_ten_executions_scale_to_three_vms_and_nothing_is_left(gcp_vh: VhOrch, gce) -> None:  # type: ignore[no-untyped-def]
    ids = [gcp_vh.run_json("work", "--project", "p", "--adhoc", str(gcp_vh.project_dir),  # type: ignore[attr-defined]
                           "--env", "gcp-cpu")["id"] for _ in range(10)]
    gcp_vh.start_daemon()
    # Only wait here: how many VMs there were is read afterwards from what was stored (rows, timestamps)
    # and the fake's own log of inserts, never sampled between slow CLI calls.
    deadline = time.monotonic() + 240
    while True:
        infos = [gcp_vh.json("exec", "info", str(i), "--json") for i in ids]
        if all(i["status"] in ("complete", "error", "stopped") for i in infos):
            break
        assert time.monotonic() < deadline, [i["status"] for i in infos]
        time.sleep(0.5)
    assert [i["status"] for i in infos] == ["complete"] * 10, [(i["status"], i["status_reason"]) for i in infos]
    for info in infos:
        assert logs(gcp_vh, info["id"], "stdout") == ["line 1", "line 2"]
    status = {r["environment"]: r for r in gcp_vh.json("status", "--json")}
    assert "gcp-cpu" in status
    deadline = time.monotonic() + 60
    while gce.instances() or any(m["state"] != "terminated" for m in gcp_vh.json("machine", "list", "--all")
                                 if m["environment"] == "gcp-cpu"):
        assert time.monotonic() < deadline, gce.instances()
        time.sleep(0.5)
    # max_scale 3: three machine rows, all alive at once, the ones the executions ran on, and three inserts.
    machines = [m for m in gcp_vh.json("machine", "list", "--all") if m["environment"] == "gcp-cpu"]
    assert len(machines) == 3 and {m["id"] for m in machines} == {i["machine"] for i in infos}, machines
    assert peak([(stamp(m["created_at"]), stamp(m["state_changed_at"])) for m in machines]) == 3
    assert len(gce.calls("insert")) == 3


def test_a_preempted_vm_mid_run_requeues_and_the_execution_completes_elsewhere(gcp_vh: VhOrch, gce, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                ssh_pool: SSHPool) -> None:
    entry = json.loads((tmp_path / "gcp.yaml").read_text())["environments"][0]
    entry["spot"] = True
    (tmp_path / "gcp.yaml").write_text(json.dumps({"environments": [entry]}))
    gcp_vh("env", "apply", str(tmp_path / "gcp.yaml"))
    eid = gcp_vh.run_json("work", "-p", "lines=40", "-p", "pause=0.25", "--project", "p", "--adhoc",
                          str(gcp_vh.project_dir), "--env", "gcp-cpu")["id"]  # type: ignore[attr-defined]
    gcp_vh.start_daemon()
    deadline = time.monotonic() + 60
    while len(logs(gcp_vh, eid, "stdout")) < 3:
        assert time.monotonic() < deadline, gcp_vh.json("exec", "info", str(eid), "--json")
        time.sleep(0.2)
    first = gcp_vh.json("exec", "info", str(eid), "--json")["machine"]
    (instance,) = gce.instances()
    gce.preempt(instance["name"])
    info = gcp_vh.wait(eid, timeout=180)
    assert info["status"] == "complete", info
    assert info["attempt"] == 2 and info["machine"] != first
    machines = {m["id"]: m for m in gcp_vh.json("machine", "list", "--all")}
    assert machines[first]["state"] == "lost" and "reclaimed" in machines[first]["reason"]
    assert logs(gcp_vh, eid, "stdout")[-40:] == [f"line {n}" for n in range(1, 41)]


def test_inputs_and_outputs_move_between_the_vm_and_gcs_directly(gcp_vh: VhOrch, gcs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = "vh-orch-test"
    gcs.client().bucket(bucket).blob("inputs/data.csv").upload_from_string(b"a,b\n1,2\n")
    key = tmp_path / "sa.json"
    key.write_text(json.dumps(gcs.account.info))
    gcp_vh.env["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)  # Application Default Credentials, as in production
    entry = json.loads((tmp_path / "gcp.yaml").read_text())["environments"][0]
    entry["datastore"] = {"uri": f"gs://{bucket}/runs", "endpoint_url": gcs.url}
    (tmp_path / "gcp.yaml").write_text(json.dumps({"environments": [entry]}))
    gcp_vh("env", "apply", str(tmp_path / "gcp.yaml"))
    gcp_vh.start_daemon()
    eid = gcp_vh.run_json("data", "--project", "p", "--adhoc", str(gcp_vh.project_dir),  # type: ignore[attr-defined]
                          "--env", "gcp-cpu", "-i", f"data=gs://{bucket}/inputs/data.csv")["id"]
    info = gcp_vh.wait(eid, timeout=180)
    assert info["status"] == "complete", info
    expected = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert f"{expected}  /valohai/inputs/data/data.csv" in logs(gcp_vh, eid, "stdout")
    outputs = {o["name"]: o for o in info["outputs"]}
    assert set(outputs) == {"big.bin", "sub/it's small.txt"}
    objects = gcs.objects(bucket)
    for output in outputs.values():
        assert output["uri"].startswith(f"gs://{bucket}/runs/")
        body = objects[output["uri"].removeprefix(f"gs://{bucket}/")]
        assert len(body) == output["size"] and hashlib.sha256(body).hexdigest() == output["sha256"]
    # The VM moved the bytes with signed URLs (checked by the proxy); the daemon only signed.
    moved = [s for s in gcs.proxy.log if s.method in ("PUT", "GET") and ("/runs/" in s.path or "data.csv" in s.path)
             and not s.path.startswith(("/storage/", "/upload/", "/download/"))]
    assert len(moved) == 3 and all(s.signed and s.user_agent.startswith("curl/") for s in moved)


def test_a_missing_image_is_fatal_with_googles_message(world: GCPWorld) -> None:
    world.gce.fail("insert", 404, reason="notFound",
                   message="The resource 'projects/debian-cloud/global/images/family/debian-99' was not found")
    world.submit(1)
    world.run(3)
    (failure,) = world.store.recent_failures(world.env.id)  # type: ignore[arg-type]
    assert failure.kind == "fatal" and "debian-99' was not found" in failure.message


def test_a_listing_that_keeps_failing_changes_nothing_and_does_not_hang(world: GCPWorld) -> None:
    world.submit(1)
    world.run(1)
    (machine,) = world.machines()
    world.gce.fail("aggregatedList", 503, message="Service Unavailable")  # the library would retry it for 10 min
    world.run(3)
    assert world.machine(machine.id).state == machine.state  # type: ignore[arg-type]
    assert len(world.gce.calls("aggregatedList")) >= 3


def test_the_startup_script_installs_the_host_key_and_the_user(tmp_path: Path, docker_images: None) -> None:
    """Run the first-boot script in a Debian container (systemctl, apt and docker stubbed out)."""
    import subprocess

    from conftest import PYTHON_IMAGE
    from vh_orch.cloud_drivers.vm import generate_host_key, startup_script

    private, public = generate_host_key()
    login = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileButHarmless vh-orch"
    (tmp_path / "startup.sh").write_text(startup_script("vh", login, private, public, "/var/lib/vh orch"))
    check = ("mkdir -p /stub && for c in systemctl service docker curl apt-get iptables; do "
             "printf '#!/bin/sh\\nexit 0\\n' > /stub/$c; chmod +x /stub/$c; done; "
             "PATH=/stub:$PATH sh /in/startup.sh && PATH=/stub:$PATH sh /in/startup.sh && "
             "id -nG vh && cat /home/vh/.ssh/authorized_keys && cat /etc/ssh/ssh_host_ed25519_key.pub && "
             "stat -c '%a %U' /etc/ssh/ssh_host_ed25519_key /var/lib/vh\\ orch && cat /etc/sudoers.d/vh-orch && "
             "test -f /var/lib/vh-orch-first-boot-done && echo DONE")
    result = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none",
                             "-v", f"{tmp_path}:/in:ro", PYTHON_IMAGE, "sh", "-c", check],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "docker" in lines[0].split()
    assert lines[1:3] == [login, public], "the key is added once, even when the script runs twice"
    assert lines[3:5] == ["600 root", "755 vh"]
    assert lines[5] == "vh ALL=(ALL) NOPASSWD:ALL" and lines[-1] == "DONE"

"""The fake Compute Engine API (gcpfake.py) driven by the real google-cloud-compute client over REST.

Operations are awaited with `ZoneOperationsClient.wait` on the fake, never with the extended
operation's `.result()`, whose own operations client would go to Google's host.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import compute_v1

PROJECT = "vh-test"
ZONE, OTHER_ZONE, EMPTY_ZONE = "europe-west4-a", "europe-west4-b", "europe-west4-c"
DONE, RUNNING = compute_v1.Operation.Status.DONE, compute_v1.Operation.Status.RUNNING
BOOT_DISK = compute_v1.AttachedDiskInitializeParams(
    disk_size_gb=50, source_image="projects/debian-cloud/global/images/family/debian-12")


@pytest.fixture
def api(gce):  # type: ignore[no-untyped-def]
    return SimpleNamespace(instances=gce.client(), operations=gce.client("zone_operations"))


def vm(name: str, *, zone: str = ZONE, machine: str = "n1-standard-4", spot: bool = False,
       labels: dict[str, str] | None = None) -> compute_v1.Instance:
    return compute_v1.Instance(
        name=name, machine_type=f"zones/{zone}/machineTypes/{machine}", labels=labels or {"vh-orch": "test"},
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="user-data", value="#cloud-config\n")]),
        network_interfaces=[compute_v1.NetworkInterface(access_configs=[compute_v1.AccessConfig(name="nat")])],
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=BOOT_DISK)],
        scheduling=compute_v1.Scheduling(provisioning_model="SPOT", instance_termination_action="STOP") if spot
        else None)


def insert(api, instance: compute_v1.Instance, zone: str = ZONE,  # type: ignore[no-untyped-def]
           request_id: str | None = None) -> compute_v1.Operation:
    request = compute_v1.InsertInstanceRequest(project=PROJECT, zone=zone, instance_resource=instance)
    if request_id is not None:  # a field set to "" would still be sent, as `requestId=`
        request.request_id = request_id
    return api.instances.insert_unary(request=request)


def wait(api, op: compute_v1.Operation, zone: str = ZONE) -> compute_v1.Operation:  # type: ignore[no-untyped-def]
    return api.operations.wait(project=PROJECT, zone=zone, operation=op.name)


def get(api, name: str, zone: str = ZONE) -> compute_v1.Instance:  # type: ignore[no-untyped-def]
    return api.instances.get(project=PROJECT, zone=zone, instance=name)


def test_a_spot_vm_is_inserted_read_and_deleted(gce, api) -> None:  # type: ignore[no-untyped-def]
    spec = vm("vm-1", spot=True, machine="g2-standard-4")
    spec.guest_accelerators = [compute_v1.AcceleratorConfig(accelerator_count=1, accelerator_type="nvidia-l4")]
    spec.service_accounts = [compute_v1.ServiceAccount(email="runner@vh-test.iam.gserviceaccount.com",
                                                       scopes=["https://www.googleapis.com/auth/cloud-platform"])]
    request_id = str(uuid.uuid4())
    op = insert(api, spec, request_id=request_id)
    assert (op.kind, op.operation_type, op.client_operation_id) == ("compute#operation", "insert", request_id)
    assert op.target_link.endswith(f"/projects/{PROJECT}/zones/{ZONE}/instances/vm-1")
    assert op.zone.endswith(f"/zones/{ZONE}")
    assert wait(api, op).status == DONE and not wait(api, op).error.errors

    got = get(api, "vm-1")
    assert got.status == "RUNNING"  # Instance.status is a string; Operation.status is an enum
    assert got.network_interfaces[0].network_i_p.startswith("10.")
    assert got.network_interfaces[0].access_configs[0].nat_i_p.startswith("34.")
    assert got.labels == {"vh-orch": "test"}
    assert [(i.key, i.value) for i in got.metadata.items] == [("user-data", "#cloud-config\n")]
    assert got.machine_type.endswith(f"/projects/{PROJECT}/zones/{ZONE}/machineTypes/g2-standard-4")
    assert (got.scheduling.provisioning_model, got.scheduling.instance_termination_action) == ("SPOT", "STOP")
    assert got.guest_accelerators[0].accelerator_count == 1
    assert got.service_accounts[0].email == "runner@vh-test.iam.gserviceaccount.com"
    assert got.disks[0].boot and got.last_start_timestamp
    sent = gce.calls("insert")[0]
    assert sent.query == {"requestId": request_id} and sent.body["scheduling"]["provisioningModel"] == "SPOT"

    deleting = api.instances.delete_unary(request=compute_v1.DeleteInstanceRequest(
        project=PROJECT, zone=ZONE, instance="vm-1", request_id=str(uuid.uuid4())))
    assert deleting.operation_type == "delete" and wait(api, deleting).status == DONE
    with pytest.raises(exceptions.NotFound):
        get(api, "vm-1")
    with pytest.raises(exceptions.NotFound) as missing:
        api.instances.delete_unary(project=PROJECT, zone=ZONE, instance="vm-1")
    assert missing.value.errors[0]["reason"] == "notFound"
    assert gce.instances() == []


def test_a_repeated_request_id_gives_the_same_operation_and_one_vm(gce, api) -> None:  # type: ignore[no-untyped-def]
    one, two, three = (str(uuid.uuid4()) for _ in range(3))
    first, again = insert(api, vm("vm-1"), request_id=one), insert(api, vm("vm-1"), request_id=one)
    assert first.name == again.name

    gce.fail("insert", 503, applied=True, times=1)  # created, but the answer is lost
    with pytest.raises(exceptions.ServiceUnavailable):
        insert(api, vm("vm-2"), request_id=two)
    assert wait(api, insert(api, vm("vm-2"), request_id=two)).status == DONE
    assert [i["name"] for i in gce.instances()] == ["vm-1", "vm-2"]

    with pytest.raises(exceptions.Conflict) as taken:  # a new requestId for a name in use
        insert(api, vm("vm-1"), request_id=three)
    assert taken.value.code == 409 and taken.value.errors[0]["reason"] == "alreadyExists"


def test_an_operation_finishes_later_and_the_vm_boots_over_time(gce, api) -> None:  # type: ignore[no-untyped-def]
    gce.operation_seconds, gce.boot_seconds = 30, 120
    op = insert(api, vm("vm-1"))
    assert op.status == RUNNING
    assert api.operations.get(project=PROJECT, zone=ZONE, operation=op.name).status == RUNNING
    gce.advance(29.9)
    assert wait(api, op).status == DONE  # wait blocks until the operation is done (~0.1 s here)
    assert get(api, "vm-1").status == "PROVISIONING"  # for the first half of boot_seconds
    gce.advance(30)
    assert get(api, "vm-1").status == "STAGING"
    gce.advance(60)
    assert get(api, "vm-1").status == "RUNNING"

    gce.operation_seconds, gce.wait_max_seconds = 600, 0.05
    slow = insert(api, vm("vm-2"))
    assert wait(api, slow).status == RUNNING  # wait gives up at its time limit, as Google's does
    gce.advance(600)
    assert wait(api, slow).status == DONE


def test_a_deleted_vm_is_stopping_until_its_delete_operation_is_done(gce, api) -> None:  # type: ignore[no-untyped-def]
    insert(api, vm("vm-1"))
    gce.delete_seconds = 30
    op = api.instances.delete_unary(project=PROJECT, zone=ZONE, instance="vm-1")
    assert op.status == RUNNING and get(api, "vm-1").status == "STOPPING"
    gce.advance(30)
    assert wait(api, op).status == DONE
    with pytest.raises(exceptions.NotFound):
        get(api, "vm-1")


def test_list_filters_on_labels_and_follows_pages(gce, api) -> None:  # type: ignore[no-untyped-def]
    for n in range(5):
        insert(api, vm(f"vm-{n}", labels={"vh-orch": "test", "pool": "gpu" if n % 2 == 0 else "cpu"}))
    request = compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, max_results=2,
                                              filter='labels.vh-orch = "test" AND labels.pool = "gpu"')
    assert [i.name for i in api.instances.list(request=request)] == ["vm-0", "vm-2", "vm-4"]
    assert [c.query.get("pageToken") for c in gce.calls("list")] == [None, "fake-2"]

    some = compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, filter='(labels.pool = cpu) (name != "vm-1")')
    assert [i.name for i in api.instances.list(request=some)] == ["vm-3"]
    with pytest.raises(exceptions.BadRequest):
        list(api.instances.list(request=compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE,
                                                                        filter="labels.pool ~ gpu")))


def test_aggregated_list_spans_zones_and_pages(gce, api) -> None:  # type: ignore[no-untyped-def]
    gce.zones = {ZONE, OTHER_ZONE, EMPTY_ZONE}
    for zone, names in ((ZONE, ["a-1", "a-2", "a-3"]), (OTHER_ZONE, ["b-1", "b-2"])):
        for name in names:
            insert(api, vm(name, zone=zone), zone=zone)
    insert(api, vm("other", labels={"vh-orch": "someone-else"}))
    pager = api.instances.aggregated_list(request=compute_v1.AggregatedListInstancesRequest(
        project=PROJECT, max_results=2, filter='labels.vh-orch = "test"'))
    pages = [{scope: [i.name for i in scoped.instances] or scoped.warning.code
              for scope, scoped in page.items.items()} for page in pager.pages]
    assert pages == [
        {f"zones/{ZONE}": ["a-1", "a-2"], f"zones/{OTHER_ZONE}": "NO_RESULTS_ON_PAGE",
         f"zones/{EMPTY_ZONE}": "NO_RESULTS_ON_PAGE"},
        {f"zones/{ZONE}": ["a-3"], f"zones/{OTHER_ZONE}": ["b-1"], f"zones/{EMPTY_ZONE}": "NO_RESULTS_ON_PAGE"},
        {f"zones/{ZONE}": "NO_RESULTS_ON_PAGE", f"zones/{OTHER_ZONE}": ["b-2"],
         f"zones/{EMPTY_ZONE}": "NO_RESULTS_ON_PAGE"},
    ]
    assert len(gce.calls("aggregatedList")) == 3


@pytest.mark.parametrize("code,status,message", [
    ("ZONE_RESOURCE_POOL_EXHAUSTED", 503, "SERVICE UNAVAILABLE"),
    ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", 503, "SERVICE UNAVAILABLE"),
    ("QUOTA_EXCEEDED", 403, "FORBIDDEN"),
])
def test_a_capacity_or_quota_error_arrives_inside_a_done_operation(  # type: ignore[no-untyped-def]
        gce, api, code, status, message) -> None:
    gce.fail_operation(code, zone=ZONE, machine_type="a2-highgpu-1g", times=1)
    gce.operation_seconds = 10
    op = insert(api, vm("vm-1", machine="a2-highgpu-1g"))  # accepted: no exception here
    assert get(api, "vm-1").status == "PROVISIONING"  # visible until the operation fails
    gce.advance(10)
    done = wait(api, op)
    assert done.status == DONE and done.error.errors[0].code == code
    assert (done.http_error_status_code, done.http_error_message) == (status, message)
    assert ZONE in done.error.errors[0].message or "Quota 'CPUS'" in done.error.errors[0].message
    if code == "QUOTA_EXCEEDED":
        assert done.error.errors[0].error_details[0].quota_info.limit_name == "CPUS-per-project-region"
    with pytest.raises(exceptions.NotFound):
        get(api, "vm-1")

    gce.operation_seconds = 0  # other zones and machine types are unaffected, and the rule was used up
    assert not wait(api, insert(api, vm("vm-2", zone=OTHER_ZONE, machine="a2-highgpu-1g"), OTHER_ZONE),
                    OTHER_ZONE).error.errors
    assert not wait(api, insert(api, vm("vm-1", machine="a2-highgpu-1g"))).error.errors


def call(api, method: str, op_name: str) -> Any:  # type: ignore[no-untyped-def]
    instances = api.instances
    return {
        "insert": lambda: insert(api, vm("vm-2")),
        "get": lambda: get(api, "vm-1"),
        "list": lambda: list(instances.list(project=PROJECT, zone=ZONE)),
        "aggregatedList": lambda: list(instances.aggregated_list(project=PROJECT)),
        "delete": lambda: instances.delete_unary(project=PROJECT, zone=ZONE, instance="vm-1"),
        "wait": lambda: api.operations.wait(project=PROJECT, zone=ZONE, operation=op_name),
        "getOperation": lambda: api.operations.get(project=PROJECT, zone=ZONE, operation=op_name),
    }[method]()


@pytest.mark.parametrize("method,status,error,reason", [
    ("insert", 429, exceptions.TooManyRequests, "rateLimitExceeded"),
    ("insert", 503, exceptions.ServiceUnavailable, "backendError"),
    ("get", 429, exceptions.TooManyRequests, "rateLimitExceeded"),
    ("get", 403, exceptions.Forbidden, "forbidden"),
    ("list", 500, exceptions.InternalServerError, "backendError"),
    ("aggregatedList", 404, exceptions.NotFound, "notFound"),
    ("delete", 403, exceptions.Forbidden, "forbidden"),
    ("wait", 503, exceptions.ServiceUnavailable, "backendError"),
])
def test_an_http_error_reaches_the_caller_as_an_api_core_exception(  # type: ignore[no-untyped-def]
        gce, api, method, status, error, reason) -> None:
    op = insert(api, vm("vm-1"))
    gce.log.clear()
    gce.fail(method, status)
    with pytest.raises(error) as raised:
        call(api, method, op.name)
    assert raised.value.code == status and raised.value.errors[0]["reason"] == reason
    assert [c.call for c in gce.log] == [method]  # the client did not retry
    if status == 429:
        assert raised.value.reason == "RATE_LIMIT_EXCEEDED"  # from the ErrorInfo detail
        assert raised.value.errors[0]["domain"] == "usageLimits"
    assert [i["name"] for i in gce.instances()] == ["vm-1"]


@pytest.mark.parametrize("method", ["get", "list", "aggregatedList", "getOperation"])
def test_the_client_retries_503_on_reads_by_itself(gce, api, method) -> None:  # type: ignore[no-untyped-def]
    op = insert(api, vm("vm-1"))
    gce.log.clear()
    gce.fail(method, 503, times=2)
    call(api, method, op.name)
    assert [c.status for c in gce.calls(method)] == [503, 503, 200]


def test_a_preempted_spot_vm_is_terminated_or_gone(gce, api) -> None:  # type: ignore[no-untyped-def]
    insert(api, vm("stop-me", spot=True))
    insert(api, vm("delete-me", spot=True))
    insert(api, vm("on-demand"))
    gce.preempt("stop-me")
    stopped = get(api, "stop-me")
    assert stopped.status == "TERMINATED" and stopped.last_stop_timestamp
    assert not stopped.network_interfaces[0].access_configs[0].nat_i_p  # the ephemeral address is released
    gce.preempt("delete-me", action="DELETE")
    with pytest.raises(exceptions.NotFound):
        get(api, "delete-me")
    with pytest.raises(ValueError):
        gce.preempt("on-demand")


def test_requests_gce_refuses_are_refused(gce, api) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exceptions.BadRequest):
        insert(api, vm("vm-1"), request_id="launch-42")  # requestId must be a UUID
    with pytest.raises(exceptions.BadRequest):
        insert(api, vm("Upper-Case"))
    with pytest.raises(exceptions.BadRequest):
        insert(api, vm("vm-1", labels={"owner": "Someone.Else"}))
    gpu_on_demand = vm("vm-1")
    gpu_on_demand.guest_accelerators = [compute_v1.AcceleratorConfig(accelerator_count=1,
                                                                      accelerator_type="nvidia-l4")]
    gpu_on_demand.scheduling = compute_v1.Scheduling(on_host_maintenance="MIGRATE")
    with pytest.raises(exceptions.BadRequest):
        insert(api, gpu_on_demand)
    gce.zones = {ZONE}
    with pytest.raises(exceptions.BadRequest):
        insert(api, vm("vm-1", zone=OTHER_ZONE), OTHER_ZONE)
    with pytest.raises(exceptions.NotFound):
        get(api, "vm-1", OTHER_ZONE)
    assert gce.instances() == []


def test_machine_types_tell_their_built_in_gpus_and_such_vms_never_migrate(gce, api) -> None:  # type: ignore[no-untyped-def]
    types = gce.client("machine_types")
    a2 = types.get(project=PROJECT, zone=ZONE, machine_type="a2-highgpu-2g")
    assert [(a.guest_accelerator_type, a.guest_accelerator_count) for a in a2.accelerators] == [
        ("nvidia-tesla-a100", 2)]
    assert (a2.name, a2.kind) == ("a2-highgpu-2g", "compute#machineType")
    assert list(types.get(project=PROJECT, zone=ZONE, machine_type="n1-standard-4").accelerators) == []
    migrating = vm("vm-1", machine="g2-standard-4")
    migrating.scheduling = compute_v1.Scheduling(on_host_maintenance="MIGRATE")
    with pytest.raises(exceptions.BadRequest, match="do not support live migration"):
        insert(api, migrating)
    assert wait(api, insert(api, vm("vm-2", machine="g2-standard-4"))).status == DONE
    assert get(api, "vm-2").scheduling.on_host_maintenance == "TERMINATE"

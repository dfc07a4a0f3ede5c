"""The `gcp` cloud: Compute Engine VMs through google-cloud-compute (REST transport).

It mirrors the AWS driver. An insert carries the machine row's launch token as its
requestId (Google deduplicates on it) and the cluster, row and environment as labels;
the host key's public half rides in the instance metadata, the first-boot setup in a
startup script. Capacity and quota errors only show inside the insert's DONE operation:
a launch returns as soon as the insert is accepted, and every listing reads the
operations still running with an operations client of the same endpoint (never the
library's default one); a failed one is reported through launch_failures(), which the
reconciler records like a failure at launch time, so zone fallback works the same. Listing is one aggregated list across zones, filtered
on the labels. Credentials: Application Default Credentials only (`credentials:
anonymous` exists for tests against a local API endpoint); nothing is stored.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.cloud import compute_v1

from vh_orch.cloud_drivers.base import (
    TAG_CLUSTER,
    TAG_ENVIRONMENT,
    TAG_MACHINE,
    EnvironmentSpec,
    LaunchOutcome,
    LaunchSpec,
    machine_id_from_tag,
)
from vh_orch.cloud_drivers.settings import GCPSettings
from vh_orch.cloud_drivers.vm import (
    TAG_HOST_KEY,
    VMAccess,
    VMInfo,
    VMMachines,
    generate_host_key,
    public_key_of,
    startup_script,
)
from vh_orch.errors import CapacityError, CloudError, ConfigError, QuotaExceeded, TransientCloudError
from vh_orch.values import PENDING, RUNNING, STOPPING, CloudInstance

log = logging.getLogger(__name__)

CAPACITY_CODES = ("ZONE_RESOURCE_POOL_EXHAUSTED", "insufficientCapacity", "RESOURCE_NOT_READY",
                  "RESOURCE_POOL_EXHAUSTED", "UNSUPPORTED_OPERATION")
QUOTA_CODES = ("QUOTA_EXCEEDED", "quotaExceeded")
THROTTLED_CODES = ("rateLimitExceeded", "RATE_LIMIT_EXCEEDED", "userRateLimitExceeded")
STATES = {"PROVISIONING": PENDING, "STAGING": PENDING, "RUNNING": RUNNING, "STOPPING": STOPPING,
          "SUSPENDING": STOPPING, "SUSPENDED": STOPPING, "TERMINATED": STOPPING, "REPAIRING": PENDING}
# Every call has a timeout and no library retry (a 503 on a read would be retried for 10
# minutes): the next reconcile pass is the retry, and it backs off by itself.
API_TIMEOUT_S = 60.0
LABEL_RE = re.compile(r"[^a-z0-9_-]")


def label_value(text: str) -> str:
    """GCE label values: lowercase letters, digits, _ and -, at most 63 characters."""
    return LABEL_RE.sub("_", text.lower())[:63]


def _reasons(exc: gexc.GoogleAPICallError) -> list[str]:
    """The `reason`s of Google's error body, and the message (which names QUOTA_EXCEEDED and the like)."""
    found = [str(e.get("reason", "")) for e in exc.errors or [] if isinstance(e, dict)]
    return [r for r in found if r] + [str(exc)]


def classify_http(exc: Exception, doing: str) -> CloudError:
    """The CloudError a failed API call means."""
    if isinstance(exc, gexc.GoogleAPICallError):
        text = f"{doing}: {exc.message or exc}"
        reasons = _reasons(exc)
        if any(code in r for r in reasons for code in QUOTA_CODES):
            return QuotaExceeded(text)
        if isinstance(exc, gexc.TooManyRequests) or any(code in r for r in reasons for code in THROTTLED_CODES):
            return TransientCloudError(text, maybe_created=False)
        if isinstance(exc, (gexc.ServerError, gexc.ServiceUnavailable)) or (exc.code or 0) >= 500:
            return TransientCloudError(text)
        return CloudError(text)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return TransientCloudError(f"{doing}: {exc}")
    return CloudError(f"{doing}: {exc}")


def classify_operation(operation: compute_v1.Operation, doing: str) -> CloudError:
    """The CloudError a DONE operation's error means (nothing was created)."""
    errors = list(operation.error.errors) if operation.error else []
    codes = [e.code for e in errors]
    text = f"{doing}: " + "; ".join(f"{e.code}: {e.message}" for e in errors) if errors else \
        f"{doing}: {operation.http_error_message or 'the operation failed'}"
    if any(c.startswith(CAPACITY_CODES) for c in codes):
        return CapacityError(text)
    if any(c in QUOTA_CODES for c in codes):
        return QuotaExceeded(text)
    if any(c in THROTTLED_CODES for c in codes) or operation.http_error_status_code in (429,):
        return TransientCloudError(text, maybe_created=False)
    if operation.http_error_status_code >= 500:
        return TransientCloudError(text, maybe_created=False)
    return CloudError(text)


@dataclass(frozen=True)
class _Pending:
    operation: str
    zone: str
    machine_id: int
    instance_type: str | None
    doing: str


class GCPDriver(VMMachines):
    def __init__(self, cluster_id: str, env: EnvironmentSpec) -> None:
        self.cluster_id = cluster_id
        self.environment = env.name
        assert isinstance(env.settings, GCPSettings), env.cloud
        self.gcp = env.settings.gcp
        self.project = self.gcp.project
        if not self.project:
            raise ConfigError(f"environment {env.name!r}: a gcp environment needs `gcp.project`")
        super().__init__(VMAccess(env.settings.ssh, default_user="vh"))
        kwargs: dict[str, Any] = {"transport": "rest"}
        if self.gcp.api_endpoint:
            kwargs["client_options"] = ClientOptions(api_endpoint=self.gcp.api_endpoint)
        if self.gcp.credentials == "anonymous":
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        self.instances = compute_v1.InstancesClient(**kwargs)
        self.operations = compute_v1.ZoneOperationsClient(**kwargs)  # the same endpoint, never the default
        self.machine_types = compute_v1.MachineTypesClient(**kwargs)
        self._gpus: dict[str, int] = {}  # machine type -> NVIDIA GPUs, built in and attached
        self.spot = env.spot
        self._pending: dict[str, _Pending] = {}
        self._failed: list[LaunchOutcome] = []
        self._lock = threading.Lock()

    # -- launch -----------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> CloudInstance:
        zone = spec.zone or ""
        name = f"{self.cluster_id}-{spec.machine_id}"
        try:
            gpus = self._gpus_of(spec.instance_type, zone) if spec.instance_type else 0
        except TransientCloudError as exc:
            raise TransientCloudError(str(exc), maybe_created=False) from None  # nothing was inserted
        host_private, host_public = generate_host_key()
        labels = {**{label_value(k): label_value(v) for k, v in self.gcp.labels.items()},
                  TAG_CLUSTER: label_value(self.cluster_id), TAG_MACHINE: str(spec.machine_id),
                  TAG_ENVIRONMENT: label_value(spec.environment)}
        script = startup_script(self.access.user, public_key_of(self.access.key_file), host_private, host_public,
                                self.access.workdir)
        instance = compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{spec.instance_type}",
            labels=labels,
            metadata=compute_v1.Metadata(items=[
                compute_v1.Items(key="startup-script", value=script),
                compute_v1.Items(key=TAG_HOST_KEY, value=host_public),
                compute_v1.Items(key="enable-oslogin", value="FALSE"),
                # GCE's Deep Learning images (common-cu*) install the NVIDIA driver at first boot when asked.
                *([compute_v1.Items(key="install-nvidia-driver", value="True")] if gpus else []),
            ]),
            disks=[compute_v1.AttachedDisk(
                boot=True, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=self.gcp.image, disk_size_gb=self.gcp.disk_gb, labels=labels))],
            network_interfaces=[compute_v1.NetworkInterface(
                network=self._network(),
                access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
            scheduling=self._scheduling(gpus),
        )
        if self.gcp.accelerators:
            instance.guest_accelerators = [compute_v1.AcceleratorConfig(
                accelerator_type=f"zones/{zone}/acceleratorTypes/{a.type}", accelerator_count=a.count)
                for a in self.gcp.accelerators]
        if self.gcp.service_account:
            instance.service_accounts = [compute_v1.ServiceAccount(
                email=self.gcp.service_account, scopes=["https://www.googleapis.com/auth/cloud-platform"])]
        doing = f"launching {spec.instance_type} in {zone}"
        try:
            operation = self.instances.insert_unary(request=compute_v1.InsertInstanceRequest(
                project=self.project, zone=zone, instance_resource=instance,
                request_id=str(uuid.UUID(hex=spec.launch_token))), retry=None, timeout=API_TIMEOUT_S)
        except gexc.Conflict:
            pass  # it exists already: an earlier attempt of this very row created it
        except Exception as exc:
            raise classify_http(exc, doing) from None
        else:
            if operation.status != compute_v1.Operation.Status.DONE:
                # Accepted; how it ends (capacity and quota errors come only then) is read by later
                # listings, so that a pass never waits for an insert to finish.
                instance_id = f"{zone}/{name}"
                with self._lock:
                    self._pending[instance_id] = _Pending(operation.name, zone, spec.machine_id,
                                                          spec.instance_type, doing)
                return CloudInstance(instance_id=instance_id, machine_id=spec.machine_id, state=PENDING, zone=zone,
                                     instance_type=spec.instance_type, launched_at=datetime.now(UTC))
            if operation.error and operation.error.errors:
                raise classify_operation(operation, doing)
        try:
            created = self.instances.get(project=self.project, zone=zone, instance=name, retry=None, timeout=API_TIMEOUT_S)
        except Exception as exc:
            raise classify_http(exc, f"reading back {name}") from None
        return self._instance(created, zone)

    def _network(self) -> str:
        network = self.gcp.network
        return network if "/" in network else f"global/networks/{network}"

    def _scheduling(self, gpus: int) -> compute_v1.Scheduling:
        if self.spot:
            return compute_v1.Scheduling(provisioning_model="SPOT", instance_termination_action="DELETE",
                                         automatic_restart=False, on_host_maintenance="TERMINATE")
        # GPUs (attached, or built into A2/A3/G2 machine types) cannot live-migrate; a maintenance
        # event ends the VM, and vh-orch replaces it.
        return compute_v1.Scheduling(provisioning_model="STANDARD", automatic_restart=False,
                                     on_host_maintenance="TERMINATE" if gpus or self.gcp.accelerators else "MIGRATE")

    # -- what a machine type has --------------------------------------------------------

    def _gpus_of(self, machine_type: str, zone: str) -> int:
        """The NVIDIA GPUs of an instance: those built into its machine type (machineTypes.get's
        `accelerators`: A2, A3, G2) and the environment's `accelerators`. Raises CloudError."""
        if machine_type not in self._gpus:
            try:
                raw = self.machine_types.get(project=self.project, zone=zone, machine_type=machine_type, retry=None,
                                             timeout=API_TIMEOUT_S)
            except Exception as exc:
                raise classify_http(exc, f"looking up machine type {machine_type} in {zone}") from None
            built_in = sum(a.guest_accelerator_count for a in raw.accelerators
                           if a.guest_accelerator_type.startswith("nvidia-"))
            self._gpus[machine_type] = built_in + sum(a.count for a in self.gcp.accelerators
                                                      if a.type.startswith("nvidia-"))
        return self._gpus[machine_type]

    def expected_gpus(self, instance_type: str | None) -> int | None:
        """See _gpus_of, asked in the environment's first zone; None on an error."""
        if not instance_type or not self.gcp.zones:
            return None
        try:
            return self._gpus_of(instance_type, self.gcp.zones[0])
        except CloudError as exc:
            log.info("environment %s: %s", self.environment, exc)
            return None

    def _poll_pending(self) -> None:
        """Look at the inserts still running: a finished one is forgotten, a failed one reported."""
        with self._lock:
            pending = list(self._pending.items())
        for instance_id, p in pending:
            try:
                operation = self.operations.get(project=self.project, zone=p.zone, operation=p.operation,
                                                retry=None, timeout=API_TIMEOUT_S)
            except gexc.NotFound:
                operation = None  # expired: the listing alone tells what became of it
            except Exception as exc:
                log.info("reading operation %s failed (%s); trying again next pass", p.operation, exc)
                continue
            if operation is not None and operation.status != compute_v1.Operation.Status.DONE:
                continue
            with self._lock:
                self._pending.pop(instance_id, None)
                if operation is not None and operation.error and operation.error.errors:
                    self._failed.append(LaunchOutcome(p.machine_id, classify_operation(operation, p.doing),
                                                      p.zone, p.instance_type))

    def launch_failures(self) -> list[LaunchOutcome]:
        """Accepted launches that failed since the last call (see reconcile)."""
        with self._lock:
            failed, self._failed = self._failed, []
        return failed

    # -- list ---------------------------------------------------------------------------

    def list_instances(self) -> list[CloudInstance]:
        self._poll_pending()
        query = (f'labels.{TAG_CLUSTER} = "{label_value(self.cluster_id)}" AND '
                 f'labels.{TAG_ENVIRONMENT} = "{label_value(self.environment)}"')
        found = []
        try:
            for scope, scoped in self.instances.aggregated_list(
                    request=compute_v1.AggregatedListInstancesRequest(project=self.project, filter=query),
                    retry=None, timeout=API_TIMEOUT_S):
                zone = scope.rpartition("/")[2]
                found.extend(self._instance(i, zone) for i in scoped.instances)
        except Exception as exc:
            raise classify_http(exc, "listing instances") from None
        listed = {i.instance_id for i in found}
        self._keep_only(listed)  # forget deleted instances (a launch meanwhile is looked up again if needed)
        with self._lock:
            # An accepted insert the listing does not show yet is still on its way.
            found += [CloudInstance(instance_id=i, machine_id=p.machine_id, state=PENDING, zone=p.zone,
                                    instance_type=p.instance_type, launched_at=datetime.now(UTC))
                      for i, p in self._pending.items() if i not in listed]
        return found

    def _instance(self, raw: compute_v1.Instance, zone: str) -> CloudInstance:
        instance_id = f"{zone}/{raw.name}"
        metadata = {item.key: item.value for item in raw.metadata.items} if raw.metadata else {}
        nic = raw.network_interfaces[0] if raw.network_interfaces else None
        public = nic.access_configs[0].nat_i_p if nic is not None and nic.access_configs else None
        info = VMInfo(instance_id=instance_id, private_ip=nic.network_i_p if nic is not None else None,
                      public_ip=public or None, zone=zone, tags=dict(raw.labels), host_key=metadata.get(TAG_HOST_KEY))
        state = STATES.get(raw.status, PENDING)
        address = self._remember(info)
        why = None
        if state == STOPPING:
            preempted = raw.scheduling.provisioning_model == "SPOT" if raw.scheduling else False
            why = f"{'spot preemption: ' if preempted else ''}the instance is {raw.status}" + \
                (f" ({raw.status_message})" if raw.status_message else "")
        launched = None
        if raw.creation_timestamp:
            try:
                launched = datetime.fromisoformat(raw.creation_timestamp)
            except ValueError:
                launched = None
        return CloudInstance(
            instance_id=instance_id,
            machine_id=machine_id_from_tag(raw.labels.get(TAG_MACHINE)),
            state=state,
            zone=zone,
            instance_type=raw.machine_type.rpartition("/")[2] or None,
            address=address,
            launched_at=launched,
            state_reason=why,
        )

    # -- terminate ----------------------------------------------------------------------

    def terminate(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            zone, _, name = instance_id.partition("/")
            try:
                self.instances.delete_unary(project=self.project, zone=zone, instance=name, retry=None, timeout=API_TIMEOUT_S)
            except gexc.NotFound:
                pass  # gone already
            except Exception as exc:
                raise classify_http(exc, f"deleting {instance_id}") from None

    # -- reaching a machine -------------------------------------------------------------

    def _look_up(self, instance_id: str) -> None:
        zone, _, name = instance_id.partition("/")
        try:
            raw = self.instances.get(project=self.project, zone=zone, instance=name, retry=None, timeout=API_TIMEOUT_S)
        except gexc.NotFound:
            return  # gone
        except Exception as exc:
            raise classify_http(exc, f"looking up {instance_id}") from None
        self._instance(raw, zone)

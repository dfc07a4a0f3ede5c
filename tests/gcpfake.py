"""Google Compute Engine for tests: a small fake of the Compute REST API (v1) on loopback.

No emulator exists for Compute Engine, so this answers the real google-cloud-compute client
(`transport="rest"`, an `api_endpoint` of `http://127.0.0.1:PORT`, anonymous credentials) with
the JSON shapes of cloud.google.com/compute/docs/reference/rest/v1/instances and zoneOperations.

Faked: instances insert / get / list / aggregatedList / delete and zoneOperations get / wait.
`requestId` is honoured as Google does: the same id returns the same operation and does
nothing again; it must be a UUID (an empty one counts as none). Instances go PROVISIONING ->
STAGING -> RUNNING over `boot_seconds`; operations are DONE after `operation_seconds` (delete:
`delete_seconds`, the instance is STOPPING until then); all of it is worked out lazily from a
clock that a test may also `advance`. `wait` blocks up to `wait_max_seconds` (Google: 2
minutes) and returns the operation as it then is. List filters: comparisons `field = value`,
`!=`, `:` (substring, `:*` present) on dotted fields (`labels.pool`, `status`,
`scheduling.provisioningModel`) joined by AND or juxtaposed, each perhaps in parentheses;
anything else (OR, NOT, regexes) is a 400, never a silent "match all".

Faults, as real GCE shows them:
  * `fail(method, status)`: an HTTP error with Google's JSON error body (reason, domain, status;
    a 429 also carries the ErrorInfo detail). `applied=True` does the work and then loses the
    answer, the case requestId exists for.
  * `fail_operation(code, zone=, machine_type=)`: the insert is accepted, its operation ends
    DONE with `error.errors[].code` (ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS] ->
    httpErrorStatusCode 503, QUOTA_EXCEEDED -> 403) and the instance, visible as PROVISIONING
    until then, disappears.
  * `preempt(name)`: a spot VM stopped by Google (TERMINATED, or gone with action DELETE).

machineTypes.get answers for any name; the accelerator-optimized families (a2-highgpu-Ng,
a2-ultragpu-Ng, a2-megagpu-16g, a3-*-8g, g2-standard-N) carry their built-in GPUs in
`accelerators` as Google documents them, and an insert of one (or with guestAccelerators)
that asks for live migration (onHostMaintenance MIGRATE) is refused as Google refuses it.

Not faked: regions, image / network lookups (any name is accepted), stop / start /
setLabels and the other instance verbs (501), global and region operations, IAM.
Addresses handed out (10.x private, 34.x NAT) are made up and must never be dialled.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from quietserver import QuietHTTPServer, serve, shut

BASE = "https://www.googleapis.com/compute/v1"
NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
MAX_RESULTS = 500

ROUTES = [  # (HTTP method, path pattern, API method name)
    ("POST", r"/zones/(?P<zone>[^/]+)/instances", "insert"),
    ("GET", r"/zones/(?P<zone>[^/]+)/instances", "list"),
    ("GET", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "get"),
    ("DELETE", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "delete"),
    ("GET", r"/aggregated/instances", "aggregatedList"),
    ("GET", r"/zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)", "getOperation"),
    ("POST", r"/zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)/wait", "wait"),
    ("GET", r"/zones/(?P<zone>[^/]+)/machineTypes/(?P<name>[^/]+)", "getMachineType"),
]
ROUTES_RE = [(verb, re.compile(rf"/compute/v1/projects/(?P<project>[^/]+){path}"), call)
             for verb, path, call in ROUTES]

# The L4 GPUs of each g2-standard-N size.
G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}


def built_in_accelerators(machine_type: str) -> list[dict[str, Any]]:
    """What machineTypes.get shows as a machine type's `accelerators`: the GPUs built into the
    accelerator-optimized families (cloud.google.com/compute/docs/accelerator-optimized-machines), none for
    the others."""
    if m := re.fullmatch(r"a2-(highgpu|ultragpu|megagpu)-(\d+)g", machine_type):
        kind = "nvidia-a100-80gb" if m[1] == "ultragpu" else "nvidia-tesla-a100"
        return [{"guestAcceleratorType": kind, "guestAcceleratorCount": int(m[2])}]
    if m := re.fullmatch(r"a3-(highgpu|megagpu|edgegpu)-(\d+)g", machine_type):
        kind = "nvidia-h100-mega-80gb" if m[1] == "megagpu" else "nvidia-h100-80gb"
        return [{"guestAcceleratorType": kind, "guestAcceleratorCount": int(m[2])}]
    if (m := re.fullmatch(r"g2-standard-(\d+)", machine_type)) and int(m[1]) in G2_GPUS:
        return [{"guestAcceleratorType": "nvidia-l4", "guestAcceleratorCount": G2_GPUS[int(m[1])]}]
    return []


# HTTP status -> (errors[].reason, error.status, default message)
HTTP_ERRORS = {
    400: ("invalid", "INVALID_ARGUMENT", "Invalid value."),
    403: ("forbidden", "PERMISSION_DENIED", "Required permission is missing."),
    404: ("notFound", "NOT_FOUND", "The resource was not found"),
    409: ("alreadyExists", "ALREADY_EXISTS", "The resource already exists"),
    429: ("rateLimitExceeded", "RESOURCE_EXHAUSTED",
          "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
          "'compute.googleapis.com' for consumer 'project_number:000000000000'."),
    500: ("backendError", "INTERNAL", "Internal error. Please try again or contact Google Support."),
    501: ("notImplemented", "UNIMPLEMENTED", "Not implemented by the fake."),
    503: ("backendError", "UNAVAILABLE", "The service is currently unavailable."),
}

# An error inside a DONE operation: code -> (httpErrorStatusCode, message)
OPERATION_ERRORS = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": (503, "The zone 'projects/{project}/zones/{zone}' does not have enough "
                                          "resources available to fulfill the request.  Try a different "
                                          "zone, or try again later."),
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": (503, "The zone 'projects/{project}/zones/{zone}' does not "
                                                       "have enough resources available to fulfill the "
                                                       "request.  '(resource type:compute)'."),
    "QUOTA_EXCEEDED": (403, "Quota 'CPUS' exceeded.  Limit: 24.0 in region {region}."),
}


class ApiError(Exception):
    """Answer the request with Google's JSON error body."""

    def __init__(self, status: int, message: str = "", reason: str = "", domain: str = "") -> None:
        super().__init__(message)
        default_reason, status_name, default_message = HTTP_ERRORS.get(status, ("error", "UNKNOWN", "Error."))
        reason = reason or default_reason
        domain = domain or ("usageLimits" if reason in ("rateLimitExceeded", "userRateLimitExceeded") else "global")
        message = message or default_message
        self.status = status
        self.body: dict[str, Any] = {"error": {
            "code": status, "message": message, "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": status_name}}
        if status == 429:
            self.body["error"]["details"] = [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {"service": "compute.googleapis.com", "quota_metric": "compute.googleapis.com/queries",
                             "quota_limit": "QueriesPerMinutePerProject"}}]


@dataclass
class Rule:
    """Answer `method` (insert, get, list, aggregatedList, delete, getOperation, wait) with an HTTP error."""

    method: str
    status: int = 429
    reason: str = ""
    message: str = ""
    zone: str = ""  # only requests for this zone ("" any)
    name: str = ""  # only this instance or operation
    times: int | None = None  # None: every matching request
    applied: bool = False  # carry the request out, then answer the error (a lost response)
    hits: int = 0


@dataclass
class OperationFault:
    """Accept matching inserts, then end their operation DONE with this error and no instance."""

    code: str = "ZONE_RESOURCE_POOL_EXHAUSTED"
    zone: str = ""
    machine_type: str = ""  # short name, e.g. "n1-standard-4"
    message: str = ""
    http_status: int = 0  # 0: the code's usual one (OPERATION_ERRORS), else 400
    times: int | None = None
    hits: int = 0


@dataclass
class Seen:
    """One request as the fake received it."""

    call: str  # the API method, or "" for an unknown path
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    status: int = 0


@dataclass
class _Instance:
    project: str
    zone: str
    resource: dict[str, Any]  # as GET shows it, less the computed status
    born: float
    gone_at: float | None = None  # removed then: being deleted, or its insert fails
    deleting: bool = False
    stopped_at: float | None = None


@dataclass
class _Operation:
    resource: dict[str, Any]
    done_at: float
    error: dict[str, Any] | None = None  # error, httpErrorStatusCode, httpErrorMessage


@dataclass
class FakeGCE:
    """The fake's state and its HTTP server; the public attributes and methods are the tests' controls."""

    boot_seconds: float = 0.0
    operation_seconds: float = 0.0
    delete_seconds: float = 0.0
    wait_max_seconds: float = 2.0
    zones: set[str] | None = None  # None: every zone exists
    rules: list[Rule] = field(default_factory=list)
    operation_faults: list[OperationFault] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)
    port: int = 0
    _instances: dict[tuple[str, str, str], _Instance] = field(default_factory=dict)
    _operations: dict[tuple[str, str, str], _Operation] = field(default_factory=dict)
    _request_ids: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    _offset: float = 0.0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _server: QuietHTTPServer | None = None

    # --- test-side controls ---

    def __repr__(self) -> str:
        return f"FakeGCE({self.url})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, kind: str = "instances"):  # type: ignore[no-untyped-def]
        """The real compute_v1 client ("instances", "zone_operations" or "machine_types") pointed at the fake."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import compute_v1

        cls = {"instances": compute_v1.InstancesClient, "zone_operations": compute_v1.ZoneOperationsClient,
               "machine_types": compute_v1.MachineTypesClient}[kind]
        return cls(transport="rest", client_options=ClientOptions(api_endpoint=self.url),
                   credentials=AnonymousCredentials())

    def fail(self, method: str, status: int = 429, **kw: Any) -> Rule:
        rule = Rule(method, status, **kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail_operation(self, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED", **kw: Any) -> OperationFault:
        fault = OperationFault(code, **kw)
        with self._lock:
            self.operation_faults.append(fault)
        return fault

    def advance(self, seconds: float) -> None:
        """Move the fake's clock on (boots, operations and deletes finish sooner)."""
        with self._lock:
            self._offset += seconds

    def preempt(self, name: str, action: str = "") -> None:
        """Preempt a spot VM: action STOP leaves it TERMINATED, DELETE removes it (default: its own)."""
        with self._lock:
            inst = self._find(name)
            scheduling = inst.resource["scheduling"]
            if scheduling.get("provisioningModel") != "SPOT" and not scheduling.get("preemptible"):
                raise ValueError(f"{name} is not a spot VM")
            if (action or scheduling.get("instanceTerminationAction", "STOP")) == "DELETE":
                del self._instances[(inst.project, inst.zone, name)]
            else:
                inst.stopped_at = self._now()

    def instances(self) -> list[dict[str, Any]]:
        """Every instance the fake holds, as GET would show it."""
        with self._lock:
            self._tick()
            return [self._view(i) for i in sorted(self._instances.values(), key=lambda i: i.resource["name"])]

    def calls(self, call: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if s.call == call]

    def reset(self) -> None:
        with self._lock:
            self.boot_seconds = self.operation_seconds = self.delete_seconds = 0.0
            self.wait_max_seconds, self.zones, self._offset = 2.0, None, 0.0
            for store in (self.rules, self.operation_faults, self.log, self._instances, self._operations,
                          self._request_ids):
                store.clear()

    # --- the API ---

    def _now(self) -> float:
        return time.monotonic() + self._offset

    def _stamp(self, at: float) -> str:
        wall = time.time() - time.monotonic() + at
        return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")

    def _tick(self) -> None:
        now = self._now()
        for key in [k for k, i in self._instances.items() if i.gone_at is not None and i.gone_at <= now]:
            del self._instances[key]

    def _find(self, name: str) -> _Instance:
        self._tick()
        found = [i for (_, _, n), i in self._instances.items() if n == name]
        if not found:
            raise KeyError(name)
        return found[0]

    def _view(self, inst: _Instance) -> dict[str, Any]:
        now, res = self._now(), copy.deepcopy(inst.resource)
        if inst.deleting:
            res["status"] = "STOPPING"
        elif inst.stopped_at is not None:
            res.update(status="TERMINATED", lastStopTimestamp=self._stamp(inst.stopped_at))
            for nic in res["networkInterfaces"]:  # an ephemeral external address goes with the stop
                for config in nic.get("accessConfigs", []):
                    config.pop("natIP", None)
        elif inst.gone_at is not None or now < inst.born + self.boot_seconds / 2:
            res["status"] = "PROVISIONING"
        elif now < inst.born + self.boot_seconds:
            res["status"] = "STAGING"
        else:
            res.update(status="RUNNING", lastStartTimestamp=self._stamp(inst.born + self.boot_seconds))
        return res

    def _operation(self, project: str, zone: str, kind: str, target: str, target_id: str, done_at: float,
                   request_id: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        n, now = next(self._ids), self._now()
        name = f"operation-{int(time.time() * 1000)}-{n:013x}-fa4e0000-{n:08x}"
        zone_url = f"{BASE}/projects/{project}/zones/{zone}"
        resource = {"kind": "compute#operation", "id": str(7_000_000_000_000_000_000 + n), "name": name,
                    "zone": zone_url, "operationType": kind, "targetLink": f"{zone_url}/instances/{target}",
                    "targetId": target_id, "user": "tester@example.invalid", "insertTime": self._stamp(now),
                    "startTime": self._stamp(now), "selfLink": f"{zone_url}/operations/{name}"}
        if request_id:
            resource["clientOperationId"] = request_id
            self._request_ids[(project, request_id)] = (project, zone, name)
        self._operations[(project, zone, name)] = _Operation(resource, done_at, error)
        return self._operation_view(self._operations[(project, zone, name)])

    def _operation_view(self, op: _Operation) -> dict[str, Any]:
        res = dict(op.resource)
        if self._now() < op.done_at:
            return {**res, "status": "RUNNING", "progress": 0}
        return {**res, "status": "DONE", "progress": 100, "endTime": self._stamp(op.done_at), **(op.error or {})}

    def _known_request(self, project: str, request_id: str) -> dict[str, Any] | None:
        """The operation an earlier request with this requestId started (Google: a UUID, not the zero one)."""
        if request_id and (not UUID_RE.fullmatch(request_id) or request_id == ZERO_UUID):
            raise ApiError(400, f"Invalid value for field 'requestId': '{request_id}'. The provided request ID "
                                f"must be a valid UUID with the exception that zero UUID ({ZERO_UUID}) is not "
                                "supported.")
        known = self._request_ids.get((project, request_id))
        return self._operation_view(self._operations[known]) if known else None

    def _insert(self, project: str, zone: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if known := self._known_request(project, query.get("requestId", "")):
            return known
        name, res = body.get("name", ""), copy.deepcopy(body)
        if not NAME_RE.fullmatch(name):
            raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                                f"'(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'")
        machine_type = res.get("machineType", "")
        if not machine_type.startswith((BASE, "projects/", "zones/")):
            raise ApiError(400, f"Invalid value for field 'resource.machineType': '{machine_type}'. "
                                "Must be a URL to a valid Compute resource of the correct type.")
        if machine_type.startswith("zones/"):
            machine_type = f"projects/{project}/{machine_type}"
        res["machineType"] = machine_type if machine_type.startswith(BASE) else f"{BASE}/{machine_type}"
        for key, value in res.get("labels", {}).items():
            if not LABEL_KEY_RE.fullmatch(key) or not LABEL_VALUE_RE.fullmatch(value):
                raise ApiError(400, f"Invalid value for field 'resource.labels': ''. Label '{key}: {value}' "
                                    "violates format constraints.")
        gpus = res.get("guestAccelerators") or built_in_accelerators(machine_type.rsplit("/", 1)[-1])
        scheduling = res.setdefault("scheduling", {})
        if scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible"):
            scheduling.update({"provisioningModel": "SPOT", "preemptible": True, "automaticRestart": False,
                               "onHostMaintenance": "TERMINATE"} | scheduling)
            scheduling.setdefault("instanceTerminationAction", "STOP")
        else:
            scheduling.update({"provisioningModel": "STANDARD", "preemptible": False, "automaticRestart": True,
                               "onHostMaintenance": "TERMINATE" if gpus else "MIGRATE"}
                              | scheduling)
        if gpus and scheduling["onHostMaintenance"] == "MIGRATE":
            raise ApiError(400, "Instances with guest accelerators do not support live migration.")
        if (project, zone, name) in self._instances:
            raise ApiError(409, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists")

        n, now = next(self._ids), self._now()
        zone_url = f"{BASE}/projects/{project}/zones/{zone}"
        nics = res.get("networkInterfaces") or [{"network": f"{BASE}/projects/{project}/global/networks/default"}]
        host = f"{n // 250 % 250}.{n % 250 + 2}"
        for i, nic in enumerate(nics):
            nic.update(kind="compute#networkInterface", name=f"nic{i}", networkIP=f"10.{i}.{host}")
            for config in nic.get("accessConfigs", []):
                config.setdefault("type", "ONE_TO_ONE_NAT")
                config.update(kind="compute#accessConfig", natIP=f"34.{i + 1}.{host}")
        for i, disk in enumerate(res.get("disks", [])):
            disk.update(kind="compute#attachedDisk", index=i)
        instance_id = str(4_000_000_000_000_000_000 + n)
        res.update(kind="compute#instance", id=instance_id, creationTimestamp=self._stamp(now),
                   zone=zone_url, networkInterfaces=nics, selfLink=f"{zone_url}/instances/{name}",
                   labelFingerprint=f"{n:016x}", fingerprint=f"{n:016x}")
        res["metadata"] = {"kind": "compute#metadata", "fingerprint": f"{n:016x}",
                           **({"items": body["metadata"]["items"]} if body.get("metadata", {}).get("items") else {})}
        done_at = now + self.operation_seconds
        inst = _Instance(project, zone, res, now)
        error = self._operation_error(project, zone, machine_type.rsplit("/", 1)[-1])
        if error:
            inst.gone_at = done_at
        self._instances[(project, zone, name)] = inst
        return self._operation(project, zone, "insert", name, instance_id, done_at, query.get("requestId", ""),
                               error)

    def _operation_error(self, project: str, zone: str, machine_type: str) -> dict[str, Any] | None:
        for fault in self.operation_faults:
            if (fault.zone in ("", zone) and fault.machine_type in ("", machine_type)
                    and (fault.times is None or fault.hits < fault.times)):
                fault.hits += 1
                status, message = OPERATION_ERRORS.get(fault.code, (400, "{code}"))
                status = fault.http_status or status
                region = zone.rsplit("-", 1)[0]
                error: dict[str, Any] = {"code": fault.code, "message": (fault.message or message).format(
                    project=project, zone=zone, region=region, code=fault.code)}
                if fault.code == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS":
                    error["errorDetails"] = [
                        {"help": {"links": [{"description": "Troubleshooting documentation",
                                             "url": "https://cloud.google.com/compute/docs/resource-error"}]}},
                        {"errorInfo": {"reason": "resource_availability", "domain": "compute.googleapis.com",
                                       "metadatas": {"zone": zone, "vmType": machine_type}}}]
                elif fault.code == "QUOTA_EXCEEDED":
                    error["errorDetails"] = [{"quotaInfo": {
                        "metricName": "compute.googleapis.com/cpus", "limitName": "CPUS-per-project-region",
                        "dimensions": {"region": region}, "limit": 24}}]
                return {"error": {"errors": [error]}, "httpErrorStatusCode": status,
                        "httpErrorMessage": HTTPStatus(status).phrase.upper()}
        return None

    def _delete(self, project: str, zone: str, name: str, query: dict[str, str]) -> dict[str, Any]:
        if known := self._known_request(project, query.get("requestId", "")):
            return known
        inst = self._get(project, zone, name)
        done_at = self._now() + self.delete_seconds
        inst.deleting, inst.gone_at = True, min(done_at, inst.gone_at or done_at)
        return self._operation(project, zone, "delete", name, inst.resource["id"], inst.gone_at,
                               query.get("requestId", ""))

    def _get(self, project: str, zone: str, name: str) -> _Instance:
        inst = self._instances.get((project, zone, name))
        if inst is None:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        return inst

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        items = [i for i in items if matches(i, query.get("filter", ""))]
        size = int(query.get("maxResults") or MAX_RESULTS)
        if not 0 <= size <= MAX_RESULTS:
            raise ApiError(400, f"Invalid value for field 'maxResults': '{size}'. Must be less than or equal to 500")
        token = query.get("pageToken", "")
        if token and not re.fullmatch(r"fake-\d+", token):
            raise ApiError(400, f"Invalid value for field 'pageToken': '{token}'. Invalid page token.")
        start = int(token[5:]) if token else 0
        more = start + size < len(items)
        return items[start:start + size], f"fake-{start + size}" if more else ""

    def _list(self, project: str, zone: str, query: dict[str, str]) -> dict[str, Any]:
        mine = [self._view(i) for (p, z, _), i in sorted(self._instances.items()) if (p, z) == (project, zone)]
        page, token = self._page(mine, query)
        url = f"{BASE}/projects/{project}/zones/{zone}/instances"
        return {"kind": "compute#instanceList", "id": f"projects/{project}/zones/{zone}/instances", "items": page,
                "selfLink": url, **({"nextPageToken": token} if token else {})}

    def _aggregated(self, project: str, query: dict[str, str]) -> dict[str, Any]:
        held = sorted((k, i) for k, i in self._instances.items() if k[0] == project)
        page, token = self._page([self._view(i) for _, i in held], query)
        zones = set(self.zones or ()) | {z for (_, z, _), _ in held}
        scopes: dict[str, Any] = {f"zones/{z}": [] for z in sorted(zones)}
        for res in page:
            scopes[f"zones/{res['zone'].rsplit('/', 1)[-1]}"].append(res)
        items = {scope: {"instances": found} if found else {"warning": {
            "code": "NO_RESULTS_ON_PAGE", "message": f"There are no results for scope '{scope}' on this page.",
            "data": [{"key": "scope", "value": scope}]}} for scope, found in scopes.items()}
        return {"kind": "compute#instanceAggregatedList", "id": f"projects/{project}/aggregated/instances",
                "items": items, "selfLink": f"{BASE}/projects/{project}/aggregated/instances",
                **({"nextPageToken": token} if token else {})}

    def _machine_type(self, project: str, zone: str, name: str) -> dict[str, Any]:
        if not NAME_RE.fullmatch(name):
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/machineTypes/{name}' was not found")
        cpus = re.search(r"-(\d+)$", name)
        res: dict[str, Any] = {
            "kind": "compute#machineType", "id": str(zlib.crc32(name.encode())), "name": name,
            "description": f"{name} (the fake's)", "guestCpus": int(cpus[1]) if cpus else 2, "memoryMb": 8192,
            "zone": zone, "selfLink": f"{BASE}/projects/{project}/zones/{zone}/machineTypes/{name}",
            "isSharedCpu": False}
        if accelerators := built_in_accelerators(name):
            res["accelerators"] = accelerators
        return res

    def _find_operation(self, key: tuple[str, str, str]) -> _Operation:
        if key not in self._operations:
            raise ApiError(404, f"The resource 'projects/{key[0]}/zones/{key[1]}/operations/{key[2]}' was not found")
        return self._operations[key]

    def _serve(self, call: str, args: dict[str, str], query: dict[str, str], body: dict[str, Any] | None
               ) -> dict[str, Any]:
        project, zone, name = args["project"], args.get("zone", ""), args.get("name", "")
        with self._lock:
            self._tick()
            if zone and self.zones is not None and zone not in self.zones:
                if call == "insert":
                    raise ApiError(400, f"Invalid value for field 'zone': '{zone}'. Unknown zone.")
                raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}' was not found")
            if call == "insert":
                return self._insert(project, zone, query, body or {})
            if call == "get":
                return self._view(self._get(project, zone, name))
            if call == "delete":
                return self._delete(project, zone, name, query)
            if call == "list":
                return self._list(project, zone, query)
            if call == "aggregatedList":
                return self._aggregated(project, query)
            if call == "getMachineType":
                return self._machine_type(project, zone, name)
            op = self._find_operation((project, zone, name))
            pause = min(op.done_at - self._now(), self.wait_max_seconds) if call == "wait" else 0
        time.sleep(max(pause, 0))  # wait: up to the end of the operation, without holding the lock
        with self._lock:
            return self._operation_view(op)

    def _match(self, call: str, args: dict[str, str]) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.method == call and rule.zone in ("", args.get("zone")) and rule.name in ("", args.get("name"))
                        and (rule.times is None or rule.hits < rule.times)):
                    rule.hits += 1
                    return rule
        return None

    # --- HTTP ---

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else every answer waits ~40 ms for the client's ACK

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                seen = Seen("", self.command, url.path, query, None)
                with fake._lock:
                    fake.log.append(seen)
                status, payload = 200, {}
                try:
                    try:
                        seen.body = json.loads(raw) if raw else None
                    except ValueError:
                        raise ApiError(400, "Invalid JSON payload received.") from None
                    route = [(call, m) for verb, pattern, call in ROUTES_RE
                             if verb == self.command and (m := pattern.fullmatch(url.path))]
                    if not route:
                        raise ApiError(501, f"{self.command} {url.path}: not implemented by the fake")
                    seen.call, args = route[0][0], route[0][1].groupdict()
                    rule = fake._match(seen.call, args)
                    if rule is not None and not rule.applied:
                        raise ApiError(rule.status, rule.message, rule.reason)
                    payload = fake._serve(seen.call, args, query, seen.body)
                    if rule is not None:
                        raise ApiError(rule.status, rule.message, rule.reason)
                except ApiError as exc:
                    status, payload = exc.status, exc.body
                seen.status = status
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        self._server = serve(Handler, "fake-gce", port=self.port, poll_s=0.05)
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        shut(self._server)


# --- list filters: comparisons joined by AND (or juxtaposed), each perhaps in parentheses ---

_TERM = re.compile(r'\s*\(?\s*([\w.-]+)\s*(!=|=|:)\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\s()]+)\s*\)?\s*(?:AND\s)?')


def matches(resource: dict[str, Any], text: str) -> bool:
    """Whether `resource` passes the filter `text`; OR, NOT and other syntax are a 400, as nothing here uses them."""
    passed, pos = True, 0
    while text[pos:].strip():
        term = _TERM.match(text, pos)
        if not term:
            raise ApiError(400, f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
        passed, pos = passed and _compare(resource, *term.groups()), term.end()
    return passed


def _compare(resource: dict[str, Any], path: str, op: str, want: str) -> bool:
    want = want[1:-1] if want[:1] in "\"'" and len(want) > 1 else want
    value: Any = resource
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if op == ":":  # substring, or `:*` for "is set"
        return value is not None and (want == "*" or want in str(value))
    text = None if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    equal = text is not None and want in (text, text.rsplit("/", 1)[-1])  # a URL field matches its last part
    return equal if op == "=" else not equal

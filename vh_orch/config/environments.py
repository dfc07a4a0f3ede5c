"""Environment definitions: parsed, validated and normalised, the whole file or nothing.

An environment file has a top-level `environments:` list. Common keys sit at the top
of each entry; settings that belong to one cloud sit under a key named after it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from vh_orch.bootstrap.gpus import MAX_GPUS
from vh_orch.bootstrap.isolation import NETWORKS
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.cloud_drivers.settings import (
    ADMINS,
    CLOUD_SETTINGS,
    DEFAULT_GCP_IMAGE,
    EVERYONE,
    SECTIONS,
    EnvSettings,
    PoolHostSetting,
)
from vh_orch.errors import ConfigError
from vh_orch.storage.datastores import validate_datastore_setting

CLOUDS = ("local", "ssh", "aws", "gcp", "fake")
BUILTIN_ENVIRONMENT = "local"  # the environment `vh-orch init` creates (this host); `env apply --prune` keeps it
PULL_POLICIES = ("if-missing", "always", "never")
IDLE_POLICIES = ("timeout", "adaptive")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

COMMON_KEYS = {
    "name", "cloud", "min_scale", "max_scale", "idle_timeout", "idle_policy", "instance_type", "region",
    "spot", "price_per_hour", "slots", "max_attempts", "pull_policy", "launch_timeout", "boot_timeout",
    "bootstrap_timeout", "capacity_block", "description", "datastore", "wait_cost_per_hour", "input_cache_gb",
    "image_keep", "image_disk_low_percent", "pids_limit", "container_network", "users", "gpus_per_execution",
}
# The keys each section accepts and the sections each cloud takes (`ssh` also serves aws and gcp
# machines): what the typed settings models read, so that no key is accepted here and ignored there.
CLOUD_KEYS: dict[str, set[str]] = {section: set(model.model_fields) for section, model in SECTIONS.items()}
SECTIONS_FOR: dict[str, set[str]] = {model.model_fields["cloud"].default: set(model.model_fields) & set(SECTIONS)
                                     for model in CLOUD_SETTINGS}

_SETTING = {name: f.default for name, f in EnvSettings.model_fields.items()}  # the settings' defaults
DEFAULTS: dict[str, Any] = {
    "min_scale": 0,
    "max_scale": 1,
    "idle_timeout": 600.0,
    "idle_policy": _SETTING["idle_policy"],
    "spot": False,
    "price_per_hour": 0.0,
    "slots": 1,
    "max_attempts": 3,
    "pull_policy": _SETTING["pull_policy"],
    "launch_timeout": _SETTING["launch_timeout_s"],
    "boot_timeout": _SETTING["boot_timeout_s"],
    "bootstrap_timeout": _SETTING["bootstrap_timeout_s"],
    "capacity_block": _SETTING["capacity_block_s"],
}


# Settings that are a number from 0 to a top: (key, top, what a wrong value is not).
NUMBER_SETTINGS: tuple[tuple[str, float, str], ...] = (
    ("wait_cost_per_hour", math.inf, "an amount per hour (a number, 0 or more, in the units of price_per_hour)"),
    ("input_cache_gb", 1_000_000, "a size in GB (a number, 0 or more; 0 turns the cache off)"),
    ("image_disk_low_percent", 100, "a percentage (0-100; 0 never removes images)"),
)
# Settings that are a whole number from 0 to a top, the same way.
WHOLE_NUMBER_SETTINGS: tuple[tuple[str, int, str], ...] = (
    ("pids_limit", 4_194_304, "a number of processes per container (a whole number up to 4194304; 0: no limit; "
                              "default 4096)"),
    ("gpus_per_execution", MAX_GPUS, f"a number of GPUs each execution asks for unless its step says (a whole "
                                     f"number, 0 to {MAX_GPUS}; default 0)"),
)


def parse_users(value: Any, where: str) -> str | list[str]:
    """An environment's `users`: everyone, admins, or a list of user names (ConfigError otherwise)."""
    if value in (EVERYONE, ADMINS):
        return str(value)
    names = value.split(",") if isinstance(value, str) else value
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, str) and n.strip() and len(n) <= 200 for n in names)):
        raise ConfigError(f"{where}: {value!r} is not `everyone`, `admins` or a list of user names")
    return sorted({n.strip() for n in names})


def parse_duration(value: Any, where: str) -> float:
    """`30s`, `10m`, `2h`, `1d`, `1h30m` or a number of seconds; never negative."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a duration (use e.g. 30s, 10m, 2h)")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{where}: {value!r} is negative; durations are 0 or more")
        return float(value)
    text = str(value).strip().lower()
    if text.startswith("-"):
        raise ConfigError(f"{where}: {value!r} is negative; durations are 0 or more")
    if not text or DURATION_RE.sub("", text).strip():
        raise ConfigError(f"{where}: {value!r} is not a duration (use e.g. 30s, 10m, 2h)")
    return sum(float(n) * UNIT_S[u] for n, u in DURATION_RE.findall(text))


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class EnvSpec:
    """One validated environment: `columns` map onto the table, `settings` is the rest."""

    name: str
    cloud: str
    columns: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)


def _int(entry: dict[str, Any], key: str, where: str, minimum: int) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}: {value!r} is not a whole number")
    if value < minimum:
        raise ConfigError(f"{where}.{key}: {value} is less than {minimum}")
    return value


def parse_entry(entry: Any, where: str) -> EnvSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: each environment is a mapping of keys to values")
    name = entry.get("name")
    where = f"{where} ({name})" if isinstance(name, str) else where
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{where}.name: {name!r} is not a valid name (lowercase letters, digits, . _ -)")
    cloud = entry.get("cloud")
    if cloud not in CLOUDS:
        raise ConfigError(f"{where}.cloud: {cloud!r} is not a known cloud; use one of {', '.join(CLOUDS)}")
    for key in entry:
        if key in COMMON_KEYS:
            continue
        if key in CLOUD_KEYS:
            if key not in SECTIONS_FOR[cloud]:
                raise ConfigError(f"{where}.{key}: the `{key}:` section does not apply to cloud {cloud}")
            continue
        raise ConfigError(f"{where}: unknown key {key!r}")
    merged = {**DEFAULTS, **{k: v for k, v in entry.items() if k in COMMON_KEYS}}
    if capabilities(cloud).host_pool and "max_scale" not in entry and isinstance(entry.get("ssh"), dict):
        # A pool may use all of its hosts unless told otherwise.
        hosts = entry["ssh"].get("hosts")
        merged["max_scale"] = len(hosts) if isinstance(hosts, list) and hosts else 1

    columns: dict[str, Any] = {}
    min_scale = _int(merged, "min_scale", where, 0)
    max_scale = _int(merged, "max_scale", where, 0)
    if min_scale > max_scale:
        raise ConfigError(f"{where}: min_scale ({min_scale}) is greater than max_scale ({max_scale})")
    columns.update(min_scale=min_scale, max_scale=max_scale)
    columns["slots"] = _int(merged, "slots", where, 1)
    columns["max_attempts"] = _int(merged, "max_attempts", where, 1)
    columns["idle_timeout_s"] = parse_duration(merged["idle_timeout"], f"{where}.idle_timeout")
    if not isinstance(merged["spot"], bool):
        raise ConfigError(f"{where}.spot: {merged['spot']!r} is not true or false")
    columns["spot"] = merged["spot"]
    price = merged["price_per_hour"]
    if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
        raise ConfigError(f"{where}.price_per_hour: {price!r} is not a price (a number, 0 or more)")
    columns["price_per_hour"] = float(price)
    region = merged.get("region")
    if region is not None and not isinstance(region, str):
        raise ConfigError(f"{where}.region: {region!r} is not a name")
    columns["region"] = region

    settings: dict[str, Any] = {}
    types = merged.get("instance_type")
    if types is not None:
        types_list = [types] if isinstance(types, str) else types
        if not isinstance(types_list, list) or not types_list or not all(isinstance(t, str) and t for t in types_list):
            raise ConfigError(f"{where}.instance_type: give a name or a list of names (fallbacks in order)")
        columns["instance_type"] = types_list[0]
        settings["instance_types"] = types_list
    else:
        columns["instance_type"] = None
    if merged["pull_policy"] not in PULL_POLICIES:
        raise ConfigError(f"{where}.pull_policy: {merged['pull_policy']!r} is not one of {', '.join(PULL_POLICIES)}")
    settings["pull_policy"] = merged["pull_policy"]
    if merged["idle_policy"] not in IDLE_POLICIES:
        raise ConfigError(f"{where}.idle_policy: {merged['idle_policy']!r} is not one of {', '.join(IDLE_POLICIES)}")
    settings["idle_policy"] = merged["idle_policy"]
    for key in ("launch_timeout", "boot_timeout", "bootstrap_timeout", "capacity_block"):
        settings[f"{key}_s"] = parse_duration(merged[key], f"{where}.{key}")
    if "description" in merged:
        settings["description"] = str(merged["description"])
    for key, top, what in NUMBER_SETTINGS:
        if key in merged:
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
                raise ConfigError(f"{where}.{key}: {value!r} is not {what}")
            settings[key] = float(value)
    for key, top, what in WHOLE_NUMBER_SETTINGS:
        if key in merged:
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ConfigError(f"{where}.{key}: {value!r} is not {what}")
            settings[key] = value
    if "container_network" in merged:
        if merged["container_network"] not in NETWORKS:
            raise ConfigError(f"{where}.container_network: {merged['container_network']!r} is not one of "
                              f"{', '.join(NETWORKS)} (none: the container has no network at all)")
        settings["container_network"] = merged["container_network"]
    if "image_keep" in merged:
        settings["image_keep_s"] = parse_duration(merged["image_keep"], f"{where}.image_keep")
    if merged.get("users", EVERYONE) != EVERYONE:
        settings["users"] = parse_users(merged["users"], f"{where}.users")
    if merged.get("datastore") is not None:
        try:
            validate_datastore_setting(merged["datastore"])
        except ConfigError as exc:
            raise ConfigError(f"{where}.datastore: {exc}") from None
        settings["datastore"] = merged["datastore"]

    for section in SECTIONS_FOR[cloud]:
        if section not in entry:
            continue
        body = entry[section]
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}.{section}: a mapping of settings is expected")
        unknown = sorted(set(body) - CLOUD_KEYS[section])
        if unknown:
            raise ConfigError(f"{where}.{section}: unknown key {unknown[0]!r}; known: {', '.join(sorted(CLOUD_KEYS[section]))}")
        settings[section] = _check_section(section, body, f"{where}.{section}", cloud)
    if capabilities(cloud).host_pool and "ssh" not in settings:
        raise ConfigError(f"{where}: an ssh environment needs an `ssh:` section with user, private_key_file and hosts")
    if capabilities(cloud).launches_vms:
        _check_vm_environment(cloud, columns, settings, where)
    if capabilities(cloud).runs_on_this_host:  # its section names the runtime
        settings.setdefault(cloud, {})
        runtime = settings[cloud].get("runtime", "auto")
        if runtime not in ("auto", "docker", "process"):
            raise ConfigError(f"{where}.{cloud}.runtime: {runtime!r} is not one of auto, docker, process")
        settings[cloud]["runtime"] = runtime
    return EnvSpec(name=name, cloud=cloud, columns=columns, settings=settings)


HOST_KEYS = set(PoolHostSetting.model_fields)
HOST_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+$")
WORKDIR_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")


def _check_ssh(body: dict[str, Any], where: str, pool: bool) -> dict[str, Any]:
    for key in ("user", "private_key_file"):
        if key in body and (not isinstance(body[key], str) or not body[key]):
            raise ConfigError(f"{where}.{key}: a non-empty string is expected")
    for key in ("connect_timeout", "unreachable_timeout"):
        if key in body:
            body[key] = parse_duration(body[key], f"{where}.{key}")
    if body.get("address", "public") not in ("public", "private"):
        raise ConfigError(f"{where}.address: {body['address']!r} is not `public` or `private`")
    port = body.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{where}.port: {port!r} is not a port number")
    resolver = body.get("endpoint_resolver")
    if resolver is not None and not (isinstance(resolver, str)
                                     and re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", resolver)):
        raise ConfigError(f"{where}.endpoint_resolver: {resolver!r} is not of the form 'module:function'")
    if "workdir" in body and not (isinstance(body["workdir"], str) and WORKDIR_RE.match(body["workdir"])):
        raise ConfigError(f"{where}.workdir: an absolute path of letters, digits, . _ - / is expected")
    if "gpu_setup_command" in body and not (isinstance(body["gpu_setup_command"], str)
                                            and body["gpu_setup_command"].strip()):
        raise ConfigError(f"{where}.gpu_setup_command: a shell command is expected (or leave it out for the "
                          "built-in nvidia-container-toolkit set-up)")
    if not pool:
        return body
    hosts = body.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise ConfigError(f"{where}.hosts: a list of hosts is expected ({{address, port, host_key}})")
    seen = set()
    checked = []
    for i, host in enumerate(hosts):
        at = f"{where}.hosts[{i}]"
        if not isinstance(host, dict):
            raise ConfigError(f"{at}: a mapping with address, port and host_key is expected")
        unknown = sorted(set(host) - HOST_KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}; known: {', '.join(sorted(HOST_KEYS))}")
        address = host.get("address")
        if not isinstance(address, str) or not re.match(r"^[A-Za-z0-9.:_-]+$", address or ""):
            raise ConfigError(f"{at}.address: {address!r} is not a host name or address")
        port = host.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{at}.port: {port!r} is not a port number")
        key = host.get("host_key")
        if not isinstance(key, str) or not HOST_KEY_RE.match(" ".join(key.split()[:2])):
            raise ConfigError(f"{at}.host_key: the host's public key is required, e.g. 'ssh-ed25519 AAAA...' "
                              "(from `ssh-keyscan` or /etc/ssh/ssh_host_ed25519_key.pub); keys are pinned, "
                              "never learned")
        if f"{address}:{port}" in seen:
            raise ConfigError(f"{at}: {address}:{port} is listed twice")
        seen.add(f"{address}:{port}")
        entry = {"address": address, "port": port, "host_key": " ".join(key.split()[:2])}
        if "workdir" in host:
            if not (isinstance(host["workdir"], str) and WORKDIR_RE.match(host["workdir"])):
                raise ConfigError(f"{at}.workdir: an absolute path of letters, digits, . _ - / is expected")
            entry["workdir"] = host["workdir"]
        checked.append(entry)
    body["hosts"] = checked
    return body


def _check_vm_environment(cloud: str, columns: dict[str, Any], settings: dict[str, Any], where: str) -> None:
    """What every environment of launched VMs (aws, gcp) needs besides its own section's checks."""
    if not columns.get("region"):
        raise ConfigError(f"{where}.region: a {cloud} environment needs a region (e.g. eu-west-1, us-central1)")
    if not columns.get("instance_type"):
        raise ConfigError(f"{where}.instance_type: a {cloud} environment needs an instance type (or a list)")
    if cloud not in settings:
        raise ConfigError(f"{where}: a {cloud} environment needs a `{cloud}:` section")
    ssh = settings.get("ssh")
    if not ssh or not ssh.get("private_key_file"):
        raise ConfigError(f"{where}.ssh.private_key_file: vh-orch logs in to its {cloud} machines with this key; "
                          "create one with `ssh-keygen -t ed25519 -f FILE`")
    if ssh.get("endpoint_resolver"):
        from vh_orch.cloud_drivers.vm import load_resolver

        try:
            load_resolver(ssh["endpoint_resolver"])  # the operator's own code, named in their file
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _strings(body: dict[str, Any], key: str, where: str, pattern: str | None = None) -> None:
    value = body.get(key)
    if value is None:
        return
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{key}: a list of names is expected")
    for v in value:
        if pattern and not re.match(pattern, v):
            raise ConfigError(f"{where}.{key}: {v!r} does not look right (expected {pattern})")


def _check_tags(body: dict[str, Any], key: str, where: str, reserved: tuple[str, ...]) -> None:
    tags = body.get(key)
    if tags is None:
        return
    if not isinstance(tags, dict) or not all(isinstance(k, str) and k for k in tags):
        raise ConfigError(f"{where}.{key}: a mapping of names to values is expected")
    for name, value in tags.items():
        if name.lower().startswith(reserved):
            raise ConfigError(f"{where}.{key}: {name!r} is reserved (names starting with {', '.join(reserved)})")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}.{name}: {value!r} is not a plain value")
    body[key] = {k: str(v) for k, v in tags.items()}


def _check_aws(body: dict[str, Any], where: str) -> dict[str, Any]:
    ami = body.get("ami")
    if not isinstance(ami, str) or not re.match(r"^(ami-[0-9a-f]{8,17}|/[\w./-]+|resolve:ssm:/[\w./-]+)$", ami):
        raise ConfigError(f"{where}.ami: {ami!r} is not an AMI id (ami-...) or an SSM parameter name "
                          "(e.g. /aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id)")
    if body.get("zones") and body.get("subnet_ids"):
        raise ConfigError(f"{where}: give `zones` or `subnet_ids` (fallbacks in order), not both")
    _strings(body, "zones", where, r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
    _strings(body, "subnet_ids", where, r"^subnet-[0-9a-f]+$")
    _strings(body, "security_group_ids", where, r"^sg-[0-9a-f]+$")
    for key in ("key_name", "iam_instance_profile"):
        if key in body and (not isinstance(body[key], str) or not body[key]):
            raise ConfigError(f"{where}.{key}: a non-empty string is expected")
    size = body.get("root_volume_gb")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 65536):
        raise ConfigError(f"{where}.root_volume_gb: {size!r} is not a size in GB (8 to 65536)")
    price = body.get("spot_max_price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)) or price <= 0):
        raise ConfigError(f"{where}.spot_max_price: {price!r} is not a price per hour (a number above 0)")
    _check_tags(body, "tags", where, ("aws:", "vh-orch-"))
    url = body.get("endpoint_url")
    if url is not None and not (isinstance(url, str) and re.match(r"^https?://[^\s/]+", url)):
        raise ConfigError(f"{where}.endpoint_url: {url!r} is not an http(s) URL")
    return body


GCP_NAME_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _check_gcp(body: dict[str, Any], where: str) -> dict[str, Any]:
    project = body.get("project")
    if not isinstance(project, str) or not re.match(r"^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$", project):
        raise ConfigError(f"{where}.project: {project!r} is not a project id (e.g. my-project-123)")
    if not body.get("zones"):
        raise ConfigError(f"{where}.zones: a list of zones is needed (e.g. [us-central1-a, us-central1-b])")
    _strings(body, "zones", where, r"^[a-z]+-[a-z]+\d+-[a-z]$")
    image = body.get("image", DEFAULT_GCP_IMAGE)
    if not isinstance(image, str) or not re.match(r"^(projects/[-a-z0-9]+/global/images/|global/images/|https://)", image):
        raise ConfigError(f"{where}.image: {image!r} is not an image path "
                          "(e.g. projects/debian-cloud/global/images/family/debian-12)")
    size = body.get("disk_gb")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 10 <= size <= 65536):
        raise ConfigError(f"{where}.disk_gb: {size!r} is not a size in GB (10 to 65536)")
    for key in ("network", "service_account"):
        if key in body and (not isinstance(body[key], str) or not body[key]):
            raise ConfigError(f"{where}.{key}: a non-empty string is expected")
    _check_tags(body, "labels", where, ("vh-orch-", "goog"))
    for name, value in (body.get("labels") or {}).items():
        if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", name) or not re.match(r"^[a-z0-9_-]{0,63}$", value):
            raise ConfigError(f"{where}.labels.{name}: label names and values are lowercase letters, digits, _ "
                              "and - (names start with a letter), up to 63 characters")
    accelerators = body.get("accelerators") or []
    if not isinstance(accelerators, list) or not all(
            isinstance(a, dict) and isinstance(a.get("type"), str) and re.match(GCP_NAME_RE, a["type"])
            and set(a) <= {"type", "count"} and isinstance(a.get("count", 1), int) and a.get("count", 1) >= 1
            for a in accelerators):
        raise ConfigError(f"{where}.accelerators: a list of {{type: nvidia-l4, count: 1}} is expected")
    url = body.get("api_endpoint")
    if url is not None and not (isinstance(url, str) and re.match(r"^https?://[^\s/]+", url)):
        raise ConfigError(f"{where}.api_endpoint: {url!r} is not an http(s) URL")
    credentials = body.get("credentials", "default")
    if credentials not in ("default", "anonymous"):
        raise ConfigError(f"{where}.credentials: {credentials!r} is not `default` (Application Default "
                          "Credentials) or `anonymous`")
    if credentials == "anonymous" and not url:
        raise ConfigError(f"{where}.credentials: `anonymous` only goes with an `api_endpoint` (tests, emulators)")
    return body


def _check_fake(body: dict[str, Any], where: str) -> dict[str, Any]:
    boot = body.get("boot_seconds", 0)
    body["boot_seconds"] = parse_duration(boot, f"{where}.boot_seconds")
    zones = body.get("zones", ["fake-a"])
    if not isinstance(zones, list) or not zones or not all(isinstance(z, str) and z for z in zones):
        raise ConfigError(f"{where}.zones: a list of zone names is expected")
    body["zones"] = zones
    if "interrupt_after" in body:
        body["interrupt_after"] = parse_duration(body["interrupt_after"], f"{where}.interrupt_after")
    count = body.get("interrupt_count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigError(f"{where}.interrupt_count: {count!r} is not a whole number, 0 or more")
    gpus = body.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_GPUS:
        raise ConfigError(f"{where}.gpus: {gpus!r} is not a number of GPUs (0 to {MAX_GPUS})")
    if "state_file" in body:
        path = body["state_file"]
        # Absolute, because every daemon replica (each with its own working folder) must name the same file.
        if not isinstance(path, str) or not os.path.isabs(path) or path.endswith("/") or "\0" in path:
            raise ConfigError(f"{where}.state_file: {path!r} is not an absolute path to a file "
                              "(e.g. /var/tmp/vh-fake-cloud.json); every process that names the same file "
                              "shares the fake cloud's instances")
    return body


# Each section's own checks (a section without an entry, e.g. `local:`, is checked by the caller).
_SECTION_CHECKS: dict[str, Any] = {"aws": _check_aws, "gcp": _check_gcp, "fake": _check_fake}


def _check_section(section: str, body: dict[str, Any], where: str, cloud: str) -> dict[str, Any]:
    body = dict(body)
    if section == "ssh":  # the login section, shared by every cloud reached over SSH
        return _check_ssh(body, where, pool=capabilities(cloud).host_pool)
    check = _SECTION_CHECKS.get(section)
    return check(body, where) if check else body


def parse_file_text(text: str, source: str) -> list[EnvSpec]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"environments"}:
        raise ConfigError(f"{source}: expected a top-level `environments:` list and nothing else")
    entries = data["environments"]
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: `environments` must be a list")
    specs = [parse_entry(entry, f"environments[{i}]") for i, entry in enumerate(entries)]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: environment {dupes[0]!r} is defined more than once")
    return specs


def spec_to_entry(cloud: str, name: str, columns: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The file form of a stored environment (what `env apply` would take to recreate it)."""
    entry: dict[str, Any] = {
        "name": name,
        "cloud": cloud,
        "min_scale": columns["min_scale"],
        "max_scale": columns["max_scale"],
        "idle_timeout": columns["idle_timeout_s"],
        "spot": columns["spot"],
        "price_per_hour": columns["price_per_hour"],
        "slots": columns["slots"],
        "max_attempts": columns["max_attempts"],
    }
    if columns.get("region"):
        entry["region"] = columns["region"]
    if settings.get("instance_types"):
        types = settings["instance_types"]
        entry["instance_type"] = types[0] if len(types) == 1 else types
    for key in ("pull_policy", "idle_policy", "description", "datastore", "wait_cost_per_hour", "input_cache_gb",
                "pids_limit", "container_network", "users", "gpus_per_execution"):
        if key in settings:
            entry[key] = settings[key]
    if "image_disk_low_percent" in settings:
        entry["image_disk_low_percent"] = settings["image_disk_low_percent"]
    for key in ("launch_timeout", "boot_timeout", "bootstrap_timeout", "capacity_block", "image_keep"):
        if f"{key}_s" in settings:
            entry[key] = settings[f"{key}_s"]
    for section in SECTIONS_FOR[cloud]:
        if section in settings:
            entry[section] = settings[section]
    return entry

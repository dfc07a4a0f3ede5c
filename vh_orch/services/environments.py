"""Environments: defining one and changing one (`vh-orch env add` / `env update`).

A change is typed values; it is merged into the environment's definition (the same entry an
environments file holds, config/environments.py) and that entry is checked as a whole, so a
change can never make an environment that a file could not define.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from vh_orch.errors import UserInputError

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Environment
    from vh_orch.orchestrator.store import Store


@dataclass(frozen=True)
class EnvironmentChange:
    """What to set; None (or nothing) leaves the value as it is (a new environment: the default)."""

    # Who may submit over the API: "everyone", "admins", or user names separated by commas.
    users: str | None = None
    min_scale: int | None = None
    max_scale: int | None = None
    idle_timeout: str | None = None  # e.g. 30s, 10m, 2h
    instance_type: tuple[str, ...] | None = None  # fallbacks in order
    region: str | None = None
    spot: bool | None = None
    price_per_hour: float | None = None
    slots: int | None = None
    max_attempts: int | None = None
    pull_policy: str | None = None
    pids_limit: int | None = None
    container_network: str | None = None
    gpus_per_execution: int | None = None  # GPUs each execution asks for unless its step says
    runtime: str | None = None  # the cloud's own section: local and fake
    # Cloud settings (section, key, value), applied in order after everything above.
    cloud_settings: tuple[tuple[str, str, Any], ...] = ()


# The change's fields that are keys of an environment's entry as they are.
_ENTRY_KEYS = tuple(f.name for f in fields(EnvironmentChange) if f.name not in ("users", "runtime", "cloud_settings"))


def env_entry(env: Environment) -> dict[str, Any]:
    """An environment as the entry of an environments file that defines it."""
    from vh_orch.config.environments import spec_to_entry

    columns = {k: getattr(env, k) for k in ("min_scale", "max_scale", "idle_timeout_s", "spot", "price_per_hour",
                                             "slots", "max_attempts", "region", "instance_type")}
    return spec_to_entry(env.cloud, env.name, columns, env.settings)


def add_environment(store: Store, name: str, cloud: str, change: EnvironmentChange) -> Environment:
    """A new environment; refused (naming `name`) if one of that name exists, and with a ConfigError if
    the definition is not valid."""
    from vh_orch.config.environments import parse_entry

    if name in {e.name for e in store.list_environments()}:
        raise UserInputError(f"environment {name!r} already exists: use `vh-orch env update {name}`", field="name")
    spec = parse_entry(_merged({"name": name, "cloud": cloud}, change), "environment")
    store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
    return store.get_environment(name)


def update_environment(store: Store, name: str, change: EnvironmentChange) -> Environment:
    """The environment with the change made (which also lifts a stop after a fatal launch error); a
    draining environment stays draining."""
    from vh_orch.cloud_drivers.settings import settings_of
    from vh_orch.config.environments import parse_entry

    env = store.get_environment(name)
    spec = parse_entry(_merged(env_entry(env), change), "environment")
    settings = {**spec.settings, **({"draining": True} if settings_of(env).draining else {})}
    store.save_environment(spec.name, spec.cloud, spec.columns, settings, touch=True)
    return store.get_environment(name)


def _merged(entry: dict[str, Any], change: EnvironmentChange) -> dict[str, Any]:
    entry = dict(entry)
    if change.users is not None:
        entry["users"] = change.users
    for key in _ENTRY_KEYS:
        value = getattr(change, key)
        if value is not None:
            entry[key] = (value[0] if len(value) == 1 else list(value)) if key == "instance_type" else value
    if change.runtime is not None:
        entry[entry["cloud"]] = {**(entry.get(entry["cloud"]) or {}), "runtime": change.runtime}
    for section, key, value in change.cloud_settings:
        entry[section] = {**(entry.get(section) or {}), key: value}
    return entry

"""Where vh-orch keeps its state, as one object passed around (never globals)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    # How often the daemon runs a reconcile pass when nothing wakes it earlier.
    reconcile_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    # A heartbeat older than this means no daemon is alive.
    heartbeat_stale_s: float = 10.0
    # Grace period between SIGTERM/`docker stop` and a hard kill.
    stop_grace_s: int = 5
    # An instance that carries our cluster tag but no live machine row is terminated after this.
    orphan_grace_s: float = 120.0
    # How long a replica's hold on an environment or an execution lasts without renewal (its
    # heartbeat renews it): the longest another replica waits to take over from a paused one.
    lease_s: float = 15.0
    # Networks the daemon may fetch from for restricted executions besides public addresses (`serve
    # --allow-fetch`, VH_ORCH_ALLOW_FETCH): CIDRs, checked by storage/fetch_policy.parse_networks.
    allow_fetch: tuple[str, ...] = ()
    # The highest priority a user who is not an administrator may give an execution or task.
    max_user_priority: int = 10

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("VH_ORCH_HOME") or Path.home() / ".vh-orch").expanduser().absolute()
        db_url = env.get("VH_ORCH_DB") or f"sqlite:///{home / 'state.db'}"
        return cls(home=home, db_url=db_url, lease_s=lease_seconds(env.get("VH_ORCH_LEASE_S")))

    @property
    def repos_dir(self) -> Path:
        return self.home / "repos"

    @property
    def adhoc_dir(self) -> Path:
        return self.home / "adhoc"

    @property
    def executions_dir(self) -> Path:
        return self.home / "executions"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def wakeup_socket(self) -> Path:
        return self.home / "daemon.sock"

    def ensure_dirs(self) -> None:
        for d in (self.home, self.repos_dir, self.adhoc_dir, self.executions_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)


def lease_seconds(raw: str | None) -> float:
    """VH_ORCH_LEASE_S, checked (the default when unset)."""
    from vh_orch.errors import ConfigError

    if not raw:
        return Settings.lease_s
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"VH_ORCH_LEASE_S={raw!r} is not a number of seconds") from None
    if not 3 <= value <= 3600:
        raise ConfigError(f"VH_ORCH_LEASE_S={raw!r}: a lease lasts 3 to 3600 seconds (default 15)")
    return value

"""Where vh-orch keeps its state, as one object passed around (never globals)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
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
    # Distinct metadata keys an execution may have (`vh-orch serve --max-metadata-keys`): past it,
    # a point's new keys are not metadata (its line stays a log line).
    max_metadata_keys: int = 1000
    # How often the hardware use of running executions is sampled (CPU, memory, their GPUs;
    # VH_ORCH_UTILIZATION_INTERVAL_S); 0 turns sampling off.
    utilization_interval_s: float = 2.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("VH_ORCH_HOME") or Path.home() / ".vh-orch").expanduser().absolute()
        db_url = env.get("VH_ORCH_DB") or f"sqlite:///{home / 'state.db'}"
        return cls(home=home, db_url=db_url, lease_s=lease_seconds(env.get("VH_ORCH_LEASE_S")),
                   stop_grace_s=int(seconds_from(env, "VH_ORCH_STOP_GRACE_S", cls.stop_grace_s, 0, 3600,
                                                  "a stop's grace lasts")),
                   heartbeat_stale_s=seconds_from(env, "VH_ORCH_HEARTBEAT_STALE_S", cls.heartbeat_stale_s, 3, 3600,
                                                "a heartbeat goes stale after"),
                   utilization_interval_s=utilization_seconds(env))

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

    @property
    def input_cache_dir(self) -> Path:
        return self.home / "input-cache"

    def ensure_dirs(self) -> None:
        """The home and its folders, private to this user (0700) when they are made."""
        for d in (self.home, self.repos_dir, self.adhoc_dir, self.executions_dir, self.data_dir):
            if not d.is_dir():
                d.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
                os.chmod(d, PRIVATE_DIR)

    def tighten(self) -> int:
        """Make an installation private to its user, however it was made: the home and its folders
        0700, the database files, outputs, mirrors and packages 0600 (an owner's execute bit kept).
        The input cache's entries keep their modes (containers read them through read-only mounts),
        inside folders made 0700; execution folders in use are left alone (their containers read
        them) behind the home's 0700. Returns how many modes were changed."""
        changed = _chmod(self.home.resolve(), PRIVATE_DIR)  # the home may be reached through a link
        for path in [*self.home.glob("state.db*"), *self.home.glob("secret.key")]:
            changed += _chmod(path, PRIVATE_FILE)
        for tree in (self.data_dir, self.repos_dir, self.adhoc_dir):
            changed += _tighten_tree(tree, files=True)
        changed += _tighten_tree(self.input_cache_dir, files=False)
        changed += _chmod(self.executions_dir, PRIVATE_DIR)
        return changed


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _chmod(path: Path, mode: int) -> int:
    """Set path's permission bits to mode (keeping an owner's execute bit on files); 1 if they changed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(st.st_mode):
        return 0  # a link's own mode means nothing; what it points at is tightened where it lives
    if stat.S_ISREG(st.st_mode):
        if st.st_nlink > 1:
            return 0  # shared with a file elsewhere (a local clone links the source's objects): not ours to change
        mode |= st.st_mode & stat.S_IXUSR
    if stat.S_IMODE(st.st_mode) == mode:
        return 0
    os.chmod(path, mode)
    return 1


def _tighten_tree(top: Path, files: bool) -> int:
    changed = _chmod(top, PRIVATE_DIR)
    for root, dirs, names in os.walk(top):
        changed += sum(_chmod(Path(root) / d, PRIVATE_DIR) for d in dirs)
        if files:
            changed += sum(_chmod(Path(root) / n, PRIVATE_FILE) for n in names)
    return changed


def lease_seconds(raw: str | None) -> float:
    """VH_ORCH_LEASE_S, checked (the default when unset)."""
    return seconds_from({"VH_ORCH_LEASE_S": raw or ""}, "VH_ORCH_LEASE_S", Settings.lease_s, 3, 3600,
                        "a lease lasts")


def utilization_seconds(environ: Mapping[str, str]) -> float:
    """VH_ORCH_UTILIZATION_INTERVAL_S, checked: 0 (off) or 0.5 to 3600 seconds."""
    from vh_orch.errors import ConfigError

    name = "VH_ORCH_UTILIZATION_INTERVAL_S"
    value = seconds_from(environ, name, Settings.utilization_interval_s, 0, 3600, "samples are taken every")
    if 0 < value < MIN_UTILIZATION_INTERVAL_S:
        raise ConfigError(f"{name}={environ[name]!r}: samples are taken every {MIN_UTILIZATION_INTERVAL_S:g} to 3600 "
                          f"seconds, or 0 for never (default {Settings.utilization_interval_s:g})")
    return value


MIN_UTILIZATION_INTERVAL_S = 0.5  # below it the sampler's own cost would show in what it measures


def seconds_from(environ: Mapping[str, str], name: str, default: float, low: float, high: float,
                 what: str = "from") -> float:
    """A number of seconds from the environment variable `name`, checked (`default` when unset)."""
    from vh_orch.errors import ConfigError

    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: {what} {low:g} to {high:g} seconds (default {default:g})")
    return value

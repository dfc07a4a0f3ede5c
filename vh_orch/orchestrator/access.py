"""What a restricted submission may use: the environments open to its user, only isolated runtimes, only the
buckets the operator granted its project.

A submission is restricted when it comes through the HTTP API or the web UI from a user who is not an
administrator. The operator's CLI and administrators are trusted: they control the orchestrator anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.cloud_drivers.settings import ADMINS, EnvSettings
from vh_orch.errors import UserInputError

DOCKER_PROBE_TTL_S = 5.0

_probe_lock = threading.Lock()
_probe: tuple[float, bool, str] | None = None


def _docker_now() -> tuple[bool, str]:
    """Whether a Docker engine answers (probed at most every few seconds: submissions come in bursts)."""
    global _probe
    from vh_orch.bootstrap.runtimes import docker_available

    with _probe_lock:
        now = time.monotonic()
        if _probe is None or now - _probe[0] > DOCKER_PROBE_TTL_S:
            _probe = (now, *docker_available())
        return _probe[1], _probe[2]


def open_to(settings: EnvSettings, user: str) -> bool:
    """Whether the operator lets this user (not an administrator) submit to the environment."""
    users = settings.users
    return not (users == ADMINS or (isinstance(users, tuple) and user not in users))


def check_environment(name: str, settings: EnvSettings, user: str) -> None:
    """A restricted submission by `user` to this environment, or UserInputError saying why not."""
    users = settings.users
    if not open_to(settings, user):
        raise UserInputError(f"environment {name!r} is not open to you: its operator lets "
                             f"{'only administrators' if users == ADMINS else 'only some users'} submit to it "
                             f"(`vh-orch env update {name} --users ...`); choose another environment")
    if not capabilities(settings.cloud).runs_on_this_host:
        return  # SSH hosts and cloud VMs always run containers
    runtime = settings.wanted_runtime
    if runtime == "process":
        raise UserInputError(f"environment {name!r} runs executions as plain processes on the daemon's own host, "
                             "without isolation, which only administrators and the operator's CLI may use; "
                             "choose an environment that runs containers")
    if runtime == "auto":
        ok, why = _docker_now()
        if not ok:
            raise UserInputError(f"environment {name!r} has no Docker engine now ({why}), and executions submitted "
                                 "through the API never run unisolated on the daemon's host; try again once the "
                                 "engine answers, or choose another environment")


def check_bucket_input(name: str, uri: str, grants: Sequence[str], output_visible: Callable[[str], bool]) -> None:
    """An s3:// or gs:// input of a restricted submission: inside a grant of its project, or an output the
    user may see (output_visible(uri)); else UserInputError naming the input. Nothing is requested."""
    from vh_orch.storage.fetch_policy import granted

    if granted(uri, grants) or output_visible(uri):
        return
    raise UserInputError(f"input {name!r}: {uri} is not in a bucket this project may read; an operator grants one "
                         "with `vh-orch project update PROJECT --allow-bucket s3://BUCKET/PREFIX` (or give an "
                         "output of yours as datum://ID)", field="inputs")

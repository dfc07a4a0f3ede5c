"""The small, named family of errors vh-orch raises.

Every message says what happened and, where it can, what to do next: the CLI prints
it as it is.
"""

from collections.abc import Iterator
from contextlib import contextmanager


class VhOrchError(Exception):
    """Base of every error vh-orch raises on purpose."""


class UserInputError(VhOrchError):
    """Something the user gave us (a flag, a parameter value, a file) is not acceptable.

    field: the request field it is about, where the caller knows it (the API names it in its answer)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@contextmanager
def about(field: str) -> Iterator[None]:
    """A UserInputError raised inside that names no field yet is about `field` (its type and message
    stay: a NotFound is still a NotFound), so that the API can name the field without reading the message."""
    try:
        yield
    except UserInputError as exc:
        if exc.field is None:
            exc.field = field
        raise


class ConfigError(VhOrchError):
    """A configuration file or setting is invalid."""


class NotFound(UserInputError):
    """A named thing (project, execution, environment, datum) does not exist."""


class NoDaemon(VhOrchError):
    """A command needs a running `vh-orch serve` and none has a fresh heartbeat."""


class CloudError(VhOrchError):
    """A cloud driver failed; subclasses say how the caller should react."""


class CapacityError(CloudError):
    """The cloud has no capacity for this instance type in this zone right now."""


class QuotaExceeded(CloudError):
    """An account limit stops the launch until someone raises it."""


class TransientCloudError(CloudError):
    """A failure worth retrying after a back-off (rate limits, 5xx).

    maybe_created: whether the instance might exist all the same (a 5xx or a timeout
    after the request went out); False when the cloud refused the request outright
    (throttled), so the launch is known not to have happened."""

    def __init__(self, message: str, maybe_created: bool = True) -> None:
        super().__init__(message)
        self.maybe_created = maybe_created


class LeaseLost(VhOrchError):
    """This replica no longer holds the lease a write depends on: another one took the work over.
    Nothing was written; whoever owns the lease now carries on."""

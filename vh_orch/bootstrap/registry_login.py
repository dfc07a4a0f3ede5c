"""Pulling an image from a private registry with credentials that never stay on the machine.

The pull runs as `docker --config DIR login --password-stdin` then `docker --config DIR pull` in a
folder made for it (mktemp -d: 0700) and removed after, on this host or over SSH the same way (one
script): the password travels on standard input only (never an argument, never in a file of
root's ~/.docker), and the machine keeps the image, not the login.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field

PULL_TIMEOUT_S = 3600
# What docker says when a registry wants credentials it did not get, or refused the ones it got.
AUTH_WORDS = ("unauthorized", "authentication required", "no basic auth credentials", "denied",
              "incorrect username or password", "401")
LOGIN_FAILED = 3  # the script's exit status when `docker login` was refused

# $1 username, $2 registry host, $3 image; the password on standard input.
LOGIN_AND_PULL = r"""
set -u
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
trap 'exit 143' INT TERM HUP
docker --config "$dir" login --username "$1" --password-stdin "$2" >/dev/null || exit 3
docker --config "$dir" pull -q "$3" >/dev/null
"""


@dataclass(frozen=True)
class RegistryAuth:
    """How to log in to the registry an image comes from (host as in the image's name)."""

    host: str
    username: str
    password: str = field(repr=False)


def registry_of(image: str) -> str | None:
    """The registry host an image reference names (`127.0.0.1:5000/team/app:1` → `127.0.0.1:5000`),
    or None for Docker Hub's (`python:3.11`, `team/app`): Docker's own rule, the first part counts
    as a host when it has a `.` or a `:` or is `localhost`."""
    first, slash, _ = image.partition("/")
    if not slash:
        return None
    if "." in first or ":" in first or first == "localhost":
        return first.lower()
    return None


def login_and_pull_command(auth: RegistryAuth, image: str) -> str:
    """The shell command that pulls `image` with `auth` (the password goes on its standard input)."""
    return "sh -c " + " ".join(shlex.quote(a) for a in (LOGIN_AND_PULL, "sh", auth.username, auth.host, image))


def is_authentication(said: str) -> bool:
    lowered = said.lower()
    return any(word in lowered for word in AUTH_WORDS)


def pull_failure(image: str, said: str, auth: RegistryAuth | None, login_refused: bool = False) -> str:
    """What a failed pull says: whether it was authentication, and what to do about it."""
    last = [line.strip() for line in said.splitlines() if line.strip()]
    detail = last[-1] if last else "unknown error"
    host = registry_of(image) or "docker.io"
    if login_refused or (auth is not None and is_authentication(said)):
        return (f"pulling image {image!r} failed: authentication: the registry {host} refused the credentials "
                f"of `vh-orch registry add {host}` ({detail})")
    if is_authentication(said):
        return (f"pulling image {image!r} failed: authentication: the registry {host} wants credentials: add them "
                f"with `vh-orch registry add {host} --username USER --password-stdin` ({detail})")
    return f"pulling image {image!r} failed: {detail}"


def pull_here(image: str, auth: RegistryAuth | None) -> None:
    """Pull on this host (with `auth` through a login folder of its own); RuntimeFailure-worthy errors are
    raised as PullFailed with the message to show."""
    if auth is None:
        args, stdin = ["docker", "pull", image], None
    else:
        args, stdin = ["sh", "-c", LOGIN_AND_PULL, "sh", auth.username, auth.host, image], auth.password
    try:
        proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=PULL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PullFailed(f"pulling image {image!r} took longer than {PULL_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise PullFailed(pull_failure(image, proc.stderr, auth, login_refused=auth is not None
                                      and proc.returncode == LOGIN_FAILED))


class PullFailed(Exception):
    """A pull failed; its message is what the execution's reason says."""

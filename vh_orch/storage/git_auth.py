"""How the daemon's Git reaches a private repository: a project's own deploy key over SSH with the Git
server's host key pinned, or an HTTPS token; plain values in, an environment for `git` out.

The secrets never reach a command line, a URL or a file another user can read: the deploy key is
written to a file 0600 inside a folder 0700 made for one fetch and removed after it; a token travels in
the environment of the `git` process alone and is answered to Git's password prompt by a small
GIT_ASKPASS script that reads it from there (credential helpers are switched off for the call, so none
keeps a copy).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vh_orch.errors import UserInputError

# Key types OpenSSH accepts as host keys (`ssh -Q HostKeyAlgorithms`, certificates left out).
HOST_KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
MAX_HOST_KEY_TEXT = 16_384  # a few keys of any type, as `ssh-keyscan` prints them
TOKEN_ENV = "VH_ORCH_GIT_TOKEN"
ASKPASS = """#!/bin/sh
# Git asks for a user name, then a password: the token answers the password (and stands in as the
# user name where the URL names none, as GitHub and GitLab accept).
case "$1" in
  Username*) printf '%s\\n' "x-access-token" ;;
  *) printf '%s\\n' "$VH_ORCH_GIT_TOKEN" ;;
esac
"""
_SSH_OPTIONS = ("-o BatchMode=yes -o HashKnownHosts=no -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=30 "
                "-o ServerAliveInterval=15")


@dataclass(frozen=True)
class GitCredentials:
    """What one fetch of a project's repository may use (decrypted, held in memory for the call)."""

    private_key: bytes | None = None  # an OpenSSH private key (the project's deploy key)
    token: str | None = None  # an HTTPS token
    host_keys: tuple[str, ...] = ()  # the pinned host keys, `TYPE BASE64` each; () learns on first use

    @property
    def pins(self) -> bool:
        """Whether SSH runs with a known_hosts of our own (pinned, or learning the key)."""
        return self.private_key is not None or bool(self.host_keys)


@dataclass
class GitSession:
    """The environment for `git` during one fetch; after it, the host keys learnt (when none was pinned)."""

    env: dict[str, str]
    known_hosts: Path | None = None
    learnt: tuple[str, ...] = field(default=())


def generate_deploy_key(comment: str) -> tuple[str, bytes]:
    """A new ed25519 key pair: (the public half as an OpenSSH line, the private half in OpenSSH format)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode('ascii')} {comment}", private


def parse_host_keys(text: str, option: str = "--git-host-key") -> tuple[str, ...]:
    """The host keys in `text`: known_hosts lines (`HOST TYPE BASE64 [COMMENT]`), `ssh-keyscan` output or
    bare `TYPE BASE64` keys, one a line; each as `TYPE BASE64`. Raises UserInputError naming `option`."""
    if len(text) > MAX_HOST_KEY_TEXT:
        raise UserInputError(f"{option}: {len(text):,} characters is more than any host key line", field=option)
    keys: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        at = next((i for i, word in enumerate(words[:3]) if word in HOST_KEY_TYPES), None)
        if at is None or at + 1 >= len(words) or words[0].startswith("@"):
            raise UserInputError(f"{option}: {line[:80]!r} is not a host key line (`ssh-ed25519 AAAA...`, or "
                                 "a line of `ssh-keyscan HOST`)", field=option)
        kind, blob = words[at], words[at + 1]
        if _blob_type(blob) != kind:
            raise UserInputError(f"{option}: the {kind} key {blob[:24]!r}... is not a valid key of that type",
                                 field=option)
        keys.append(f"{kind} {blob}")
    if not keys:
        raise UserInputError(f"{option}: no host key given", field=option)
    return tuple(dict.fromkeys(keys))


def fingerprint(key: str) -> str:
    """`SHA256:...` of a `TYPE BASE64` key, as `ssh-keygen -lf` and ssh's own messages show it."""
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _blob_type(blob: str) -> str | None:
    """The key type written inside an SSH public key blob (a length-prefixed string), or None."""
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) < 4:
        return None
    size = int.from_bytes(data[:4], "big")
    if size > 64 or len(data) < 4 + size:
        return None
    try:
        return data[4:4 + size].decode("ascii")
    except UnicodeDecodeError:
        return None


def base_env() -> dict[str, str]:
    """The daemon's own environment for `git`, never waiting for a password."""
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


@contextmanager
def git_session(credentials: GitCredentials | None) -> Iterator[GitSession]:
    """The environment for one Git fetch with these credentials; the temporary files (key, known_hosts,
    askpass) are removed when the block ends, however it ends. Without credentials: the daemon's own
    environment, as for a public or local repository."""
    env = base_env()
    if credentials is None or not (credentials.pins or credentials.token):
        yield GitSession(env)
        return
    folder = Path(tempfile.mkdtemp(prefix="vh-orch-git-"))  # 0700
    try:
        session = GitSession(env)
        if credentials.pins:
            session.known_hosts = _ssh_setup(folder, credentials, env)
        if credentials.token is not None:
            _token_setup(folder, credentials.token, env)
        yield session
        if session.known_hosts is not None and not credentials.host_keys:
            session.learnt = _learnt(session.known_hosts)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ssh_setup(folder: Path, credentials: GitCredentials, env: dict[str, str]) -> Path:
    """GIT_SSH_COMMAND: only the deploy key (none of the daemon's own keys or agent), and a known_hosts of
    our own: strict with the pinned keys, else one that learns the server's key on first contact."""
    known_hosts = folder / "known_hosts"
    # Pinned keys stand for whatever host the project's URL names: the file serves this one fetch.
    known_hosts.write_text("".join(f"* {key}\n" for key in credentials.host_keys))
    checking = "yes" if credentials.host_keys else "accept-new"
    command = ["ssh", f"-o StrictHostKeyChecking={checking}",
               f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))}", _SSH_OPTIONS]
    if credentials.private_key is not None:
        key_file = folder / "deploy_key"
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(credentials.private_key)
        # The deploy key alone (none of the daemon's keys, no agent); -F /dev/null: no Host block of the
        # daemon's user's ~/.ssh/config swaps the key or the host.
        command[1:1] = ["-F /dev/null", f"-i {shlex.quote(str(key_file))}", "-o IdentitiesOnly=yes",
                        "-o IdentityAgent=none"]
        env.pop("SSH_AUTH_SOCK", None)
    env["GIT_SSH_COMMAND"] = " ".join(command)
    env.pop("GIT_SSH", None)
    return known_hosts


def _token_setup(folder: Path, token: str, env: dict[str, str]) -> None:
    askpass = folder / "askpass"
    descriptor = os.open(askpass, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(descriptor, "w") as out:
        out.write(ASKPASS)
    env[TOKEN_ENV] = token
    env["GIT_ASKPASS"] = str(askpass)
    env.pop("SSH_ASKPASS", None)
    # An empty credential.helper clears the list: no helper of the daemon's user stores the token.
    env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper", "GIT_CONFIG_VALUE_0": ""})


def _learnt(known_hosts: Path) -> tuple[str, ...]:
    try:
        text = known_hosts.read_text()
    except OSError:
        return ()
    try:
        return parse_host_keys(text) if text.strip() else ()
    except UserInputError:
        return ()


HOST_KEY_REFUSED = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
                              r"No \S+ host key is known")
KEY_REFUSED = re.compile(r"Permission denied \(publickey")


def explain_git_failure(stderr: str) -> str | None:
    """What a failed fetch's stderr means for a private repository, where it says something clearer than
    Git's last line ("Could not read from remote repository"); None otherwise."""
    if HOST_KEY_REFUSED.search(stderr):
        return ("the Git server's host key is not the one pinned for this project, so nothing was fetched: the "
                "server was replaced or someone is in between. If its operator confirms the new key, pin it: "
                "`vh-orch project fetch PROJECT --git-host-key 'ssh-ed25519 AAAA...'` (`ssh-keyscan HOST` shows it)")
    if KEY_REFUSED.search(stderr):
        return ("the Git server refused the project's deploy key: add the public key (`vh-orch project key "
                "PROJECT`) to the repository as a read-only deploy key, then `vh-orch project fetch PROJECT`")
    return None

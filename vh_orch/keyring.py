"""The installation's secret key: what project secrets, deploy keys, repository tokens, registry passwords
and webhook secrets are encrypted with before they reach the database.

The key lives outside the database, so a copy of `state.db` (or a PostgreSQL dump) alone reveals nothing:
- `VH_ORCH_SECRET_KEY`: the key itself (a Fernet key: 32 random bytes, url-safe base64), e.g. from a
  secrets manager; or
- `VH_ORCH_SECRET_KEY_FILE`: a file holding it; else
- `HOME/secret.key`, made by `vh-orch init` (0600).
Replicas of one installation must share it. A file may hold several keys, one per line, newest first:
values are encrypted with the first and decrypted with whichever opens them (rotation: put a new key
first, `vh-orch rotate-key` re-encrypts every stored value, then drop the old line).

Fernet (the `cryptography` library): AES-128-CBC with HMAC-SHA256, a timestamp and a version byte; a
value changed in the database fails to decrypt instead of decrypting to something else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from vh_orch.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

KEY_ENV = "VH_ORCH_SECRET_KEY"
KEY_FILE_ENV = "VH_ORCH_SECRET_KEY_FILE"
KEY_FILE_NAME = "secret.key"


def key_file(home: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the installation's key file is (it may not exist yet)."""
    return Path(environ[KEY_FILE_ENV]) if environ.get(KEY_FILE_ENV) else home / KEY_FILE_NAME


def key_source(home: Path, environ: Mapping[str, str] = os.environ) -> str:
    """Where the installation's keys are read from, in words (for messages)."""
    return KEY_ENV if environ.get(KEY_ENV) else str(key_file(home, environ))


def ensure_key_file(home: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """Make the key file (0600) unless a key is given or the file exists; True when it was made."""
    from cryptography.fernet import Fernet

    if environ.get(KEY_ENV):
        return False
    path = key_file(home, environ)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(Fernet.generate_key() + b"\n")
    return True


class KeyRing:
    """Encrypts with the newest key, decrypts with any of them."""

    def __init__(self, keys: list[bytes]) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        if not keys:
            raise ConfigError("no secret key: run `vh-orch init`, or set VH_ORCH_SECRET_KEY")
        try:
            self._fernet: MultiFernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError:
            raise ConfigError("the secret key is not a Fernet key (32 url-safe base64-encoded bytes); "
                              "make one with `python -c 'from cryptography.fernet import Fernet; "
                              "print(Fernet.generate_key().decode())'`") from None
        self.keys = len(keys)

    @classmethod
    def load(cls, home: Path, environ: Mapping[str, str] = os.environ) -> KeyRing:
        if environ.get(KEY_ENV):
            return cls([line.encode() for line in environ[KEY_ENV].split(",") if line.strip()])
        path = key_file(home, environ)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"no secret key at {path}: run `vh-orch init` (it makes one), or set "
                              f"{KEY_ENV} or {KEY_FILE_ENV}") from None
        return cls([line.strip().encode() for line in text.splitlines() if line.strip()])

    def encrypt(self, value: str | bytes) -> str:
        data = value.encode() if isinstance(value, str) else value
        return self._fernet.encrypt(data).decode("ascii")

    def decrypt(self, token: str) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            raise ConfigError("a stored secret does not open with this installation's secret key (another "
                              "installation's key, or the value was changed in the database)") from None

    def rotate(self, token: str) -> str:
        """The value encrypted again with the newest key; ConfigError when no key opens it."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise ConfigError("a stored secret does not open with any of the installation's keys (keep the "
                              "old key in the key file, after the new one, until `vh-orch rotate-key` is "
                              "done)") from None

"""Users' secrets: passwords through argon2, API tokens as random bytes kept only as their sha256.

Pure functions: the store keeps what these return, never a password or a token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from functools import cache
from typing import TYPE_CHECKING

from vh_orch.errors import UserInputError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; a cap keeps a login request from costing much
TOKEN_BYTES = 32
TOKEN_PREFIX = "vho_"  # makes a leaked token recognisable to secret scanners and to people


PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_project_name(name: str) -> str:
    if not PROJECT_NAME_RE.match(name):
        raise UserInputError(f"project name {name!r} is not valid: use letters, digits, '.', '_' and '-'")
    return name


def check_user_name(name: str) -> str:
    if not USER_NAME_RE.match(name):
        raise UserInputError(
            f"user name {name!r} is not valid: use 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserInputError(f"the password is too short: use at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserInputError(f"the password is too long: use at most {MAX_PASSWORD_CHARS} characters")
    if password != password.strip("\r\n"):
        raise UserInputError("the password starts or ends with a line break: give it without one")
    return password


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return _hasher().hash(check_password(password))


@cache
def _dummy_hash() -> str:
    """Checked when a user has no password (or does not exist): the answer costs what a real check
    costs, so a login's timing does not tell whether a name exists."""
    return _hasher().hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> tuple[str, str]:
    """A fresh API token and the digest to keep of it. The token is shown once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

"""Every value encrypted with the installation's key, encrypted again with its newest key (a key rotation:
`vh-orch rotate-key`), in one transaction: all of them or none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import Session, col, select

from vh_orch.orchestrator.models import Project, ProjectSecret, RegistryCredential, Webhook
from vh_orch.orchestrator.store.database import Database
from vh_orch.orchestrator.webhook_urls import reseal_url

Rotate = Callable[[str], str]


def _token(stored: str, rotate: Rotate) -> str:
    return rotate(stored)


# What is encrypted, where: (what the operator is told, table, column, how a stored value is rewritten).
ENCRYPTED: tuple[tuple[str, Any, str, Callable[[str, Rotate], str]], ...] = (
    ("project secrets", ProjectSecret, "value", _token),
    ("deploy keys", Project, "deploy_key_private", _token),
    ("repository tokens", Project, "repo_token", _token),
    ("registry passwords", RegistryCredential, "password", _token),
    ("webhook secrets", Webhook, "secret", _token),
    ("webhook URLs", Webhook, "url", reseal_url),  # `SHOWN TOKEN` (webhook_urls.py)
)


class KeysStore(Database):

    def reencrypt_secrets(self, rotate: Rotate) -> dict[str, int]:
        """Every encrypted value rewritten with `rotate` (KeyRing.rotate: decrypted with whichever key opens
        it, encrypted with the newest); how many of each kind. One transaction: a value that does not open
        (rotate raises) leaves every value as it was."""
        counts: dict[str, int] = {}
        with self.write() as s:
            for what, table, column, rewrite in ENCRYPTED:
                counts[what] = _rewrite(s, table, column, rewrite, rotate)
        return counts


def _rewrite(s: Session, table: Any, column: str, rewrite: Callable[[str, Rotate], str], rotate: Rotate) -> int:
    count = 0
    for row in s.exec(select(table).where(col(getattr(table, column)).is_not(None))).all():
        setattr(row, column, rewrite(getattr(row, column), rotate))
        s.add(row)
        count += 1
    return count

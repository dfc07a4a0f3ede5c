"""Rotating the installation's secret key (vh_orch/keyring.py): with a new key put first in the key file
(or VH_ORCH_SECRET_KEY), every stored secret value is encrypted again with it, in one transaction, after
which the old key can be removed. The operator's CLI alone does this (`vh-orch rotate-key`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings


@dataclass(frozen=True)
class KeyRotation:
    counts: dict[str, int]  # values re-encrypted, by kind (project secrets, deploy keys, ...)
    keys: int  # keys the installation holds now (the newest first)
    source: str  # where they are: the key file's path, or VH_ORCH_SECRET_KEY

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"reencrypted": self.total, "by_kind": dict(self.counts), "keys": self.keys, "source": self.source}


def rotate_key(store: Store, settings: Settings) -> KeyRotation:
    """Every encrypted value encrypted again with the newest key; ConfigError (nothing changed) when a
    value opens with none of the keys."""
    from vh_orch.keyring import KeyRing, key_source

    ring = KeyRing.load(settings.home)
    counts = store.reencrypt_secrets(ring.rotate)
    return KeyRotation(counts=counts, keys=ring.keys, source=key_source(settings.home))

"""Which registry login an execution's image pull uses: the credentials stored for the image's registry
host, its environment's own before those for every environment, decrypted just before the pull."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from vh_orch.bootstrap.registry_login import RegistryAuth, registry_of
from vh_orch.errors import UserInputError

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store

HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?::\d{1,5})?",
                  re.ASCII)


def check_registry_host(host: str) -> str:
    """A registry host as image names spell it (`registry.example.com`, `127.0.0.1:5000`), lower-cased."""
    lowered = host.strip().lower()
    if HOST.fullmatch(lowered) is None or len(lowered) > 255 or registry_of(f"{lowered}/x") is None:
        raise UserInputError(f"{host[:100]!r} is not a registry host as an image name starts with it "
                             "(e.g. registry.example.com or 127.0.0.1:5000; no scheme, no path)", field="host")
    return lowered


def registry_auth_for(store: Store, home: Path, image: str | None, environment_id: int) -> RegistryAuth | None:
    """The login for pulling `image` in this environment, or None (a public image, or no credentials stored).
    ECR images on AWS machines need none here: the machine's instance role is for that (not tried here)."""
    host = registry_of(image or "")
    if host is None:
        return None
    row = store.registry_credential(host, environment_id)
    if row is None:
        return None
    from vh_orch.keyring import KeyRing

    password = KeyRing.load(home).decrypt(row.password).decode("utf-8", "replace")
    return RegistryAuth(host=host, username=row.username, password=password)

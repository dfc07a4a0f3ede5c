"""`vh-orch rotate-key`: every stored secret value encrypted again with the installation's newest key."""

from __future__ import annotations

from typing import Annotated

import typer

from vh_orch.cli.common import note, open_store, print_json, settings


def rotate_key(json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON")] = False) -> None:
    """Re-encrypt every stored secret (project secrets, deploy keys, repository tokens, registry passwords,
    webhook secrets and URLs) with the newest key, in one transaction.

    First put a new key (`python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()
    .decode())'`) on the first line of the key file (HOME/secret.key, or VH_ORCH_SECRET_KEY_FILE), keeping
    the old one on the next line (VH_ORCH_SECRET_KEY: NEW,OLD); run this; then remove the old key."""
    from vh_orch.services.keys import rotate_key as rotate

    s = settings()
    done = rotate(open_store(s), s)
    if json_out:
        print_json(done.as_dict())
        return
    kinds = ", ".join(f"{count} {kind}" for kind, count in done.counts.items() if count) or "nothing stored yet"
    print(f"re-encrypted {done.total} value(s) with the newest key of {done.source}: {kinds}")
    if done.keys > 1:
        note(f"the older key(s) ({done.keys - 1}) can now be removed from {done.source}; every replica must have "
             "the new key first")
    else:
        note(f"{done.source} holds one key: nothing was rotated to a new one (put a new key first, keep the old "
             "one after it, and run this again)")

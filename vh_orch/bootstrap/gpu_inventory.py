"""Finding a machine's NVIDIA GPUs: nvidia-smi's inventory, on this host or over a machine's SSH connection.

No nvidia-smi, one that fails (no driver, a broken one) or one that does not answer in time: no
GPUs, and the machine serves all the same (its executions that ask for none still run there).
"""

from __future__ import annotations

import logging
import shlex
import subprocess

from vh_orch.bootstrap.gpus import GPU, INVENTORY_COMMAND, MAX_ANSWER_BYTES, parse_inventory

log = logging.getLogger(__name__)

INVENTORY_TIMEOUT_S = 60  # nvidia-smi on a machine with many GPUs may take seconds; a hung driver, forever


def gpus_here() -> list[GPU]:
    """This host's GPUs."""
    try:
        proc = subprocess.run(INVENTORY_COMMAND, capture_output=True, timeout=INVENTORY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:  # not installed, not runnable, hung
        if not isinstance(exc, FileNotFoundError):
            log.warning("nvidia-smi on this host did not answer (%s): counting no GPUs", exc)
        return []
    return _read(proc.returncode, proc.stdout.decode(errors="replace"), "this host")


def remote_inventory_command() -> str:
    """INVENTORY_COMMAND for a machine's shell: exit 127 without nvidia-smi, and `timeout` (where coreutils
    has it) ends an nvidia-smi that hangs on a broken driver before the connection's own deadline would."""
    query = shlex.join(INVENTORY_COMMAND)
    return (f"command -v nvidia-smi >/dev/null 2>&1 || exit 127; if command -v timeout >/dev/null 2>&1; "
            f"then exec timeout {INVENTORY_TIMEOUT_S - 10} {query}; else exec {query}; fi")


def _read(code: int, answer: str, where: str) -> list[GPU]:
    if code == 127:
        return []  # no nvidia-smi: no NVIDIA driver, no GPUs
    if code != 0:
        log.warning("nvidia-smi on %s failed (exit %s): counting no GPUs", where, code)
        return []
    return parse_inventory(answer[:MAX_ANSWER_BYTES])


def summary(gpus: list[GPU]) -> tuple[int, str | None]:
    """How many GPUs, and the first one's name (what a machine records)."""
    return len(gpus), (gpus[0].name if gpus else None)

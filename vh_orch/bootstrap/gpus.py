"""NVIDIA GPUs as nvidia-smi reports them: the queries vh-orch asks a machine, and their answers read.

The same commands run on this host, on SSH hosts and on cloud VMs (through whatever shell reaches
the machine); nvidia-smi that is absent or fails means no GPUs, never an error of the machine.
Answers are bounded: a line that does not parse is skipped, at most MAX_GPUS GPUs are read.
"""

from __future__ import annotations

from dataclasses import dataclass

# `csv,noheader,nounits`: "0, GPU-uuid, NVIDIA A10G, 23028" (memory in MiB).
INVENTORY_QUERY = "index,uuid,name,memory.total"
USE_QUERY = "index,utilization.gpu,memory.used"
INVENTORY_COMMAND = ["nvidia-smi", f"--query-gpu={INVENTORY_QUERY}", "--format=csv,noheader,nounits"]
USE_COMMAND = ["nvidia-smi", f"--query-gpu={USE_QUERY}", "--format=csv,noheader,nounits"]
MAX_GPUS = 64
MAX_ANSWER_BYTES = 64 * 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class GPUUse:
    index: int
    utilization_percent: float
    memory_used_bytes: int


def _rows(text: str, width: int) -> list[list[str]]:
    rows = []
    for line in text[:MAX_ANSWER_BYTES].splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == width and cells[0].isdigit():
            rows.append(cells)
        if len(rows) >= MAX_GPUS:
            break
    return rows


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_inventory(text: str) -> list[GPU]:
    """The GPUs of an INVENTORY_COMMAND answer, by index."""
    gpus = []
    for index, uuid, name, memory in _rows(text, 4):
        mib = _number(memory)
        gpus.append(GPU(int(index), uuid, name, int(mib * MiB) if mib is not None else 0))
    return sorted(gpus, key=lambda g: g.index)


def parse_use(text: str) -> list[GPUUse]:
    """Each GPU's use in a USE_COMMAND answer, by index (a value nvidia-smi cannot give reads as 0)."""
    uses = []
    for index, utilization, memory in _rows(text, 3):
        used = _number(memory)
        uses.append(GPUUse(int(index), _number(utilization) or 0.0, int(used * MiB) if used is not None else 0))
    return sorted(uses, key=lambda u: u.index)

"""Datasets: output metadata (`valohai.metadata.jsonl`, FILE.metadata.json) read at an execution's end,
the versions and aliases it names, and `dataset://` inputs expanded at submission."""

"""Endpoint resolvers for tests: map cloud instances to the local test SSH hosts.

A mock cloud hands out addresses nobody may dial; these resolvers never look at them.
VH_TEST_SSH_HOSTS holds a JSON list of {"host", "port", "host_key"}; an instance goes
to host number (machine row id mod the number of hosts), so several machines may share
one test host (their executions have distinct names and folders).
"""

from __future__ import annotations

import json
import os
from typing import Any


def test_host(instance: dict[str, Any]) -> dict[str, Any]:
    hosts = json.loads(os.environ["VH_TEST_SSH_HOSTS"])
    machine = int(instance["tags"].get("vh-orch-machine", "0"))
    return dict(hosts[machine % len(hosts)])


def nowhere(instance: dict[str, Any]) -> dict[str, Any]:
    """A broken resolver: no host at all."""
    return {"port": 22}

"""Install the tests' network guard in every Python process started with this
folder on PYTHONPATH (``vh-orch serve``, helper scripts, ...).

The guard logic lives in ``tests/netguard.py`` (one copy); it is loaded here by
path so this folder is all a subprocess needs on PYTHONPATH. In a subprocess a
refused connect or DNS lookup simply raises ``NetworkGuardError`` (an OSError).
Set ``VH_ORCH_NETGUARD=off`` in a subprocess's environment to skip it.
"""

import importlib.util
import os
import sys


def _install_netguard() -> None:
    if os.environ.get("VH_ORCH_NETGUARD", "").lower() in ("off", "0", "no", "false"):
        return
    module = sys.modules.get("netguard")
    if module is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netguard.py")
        spec = importlib.util.spec_from_file_location("netguard", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"network guard not found at {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["netguard"] = module
        spec.loader.exec_module(module)
    module.install()


_install_netguard()

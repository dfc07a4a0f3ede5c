"""Imported by the fork server (tests/forkserve.py) before it forks any daemon: what every daemon
would otherwise do once after its fork, done once per test process.

- Every vh-orch module a daemon may load (the API's routers and pages are imported as the app is
  built, the drivers as environments need them), except the migrations (Alembic's env.py runs at
  import) and the Google clients (gRPC is not to be loaded before a fork).
- The first valohai.yaml check (valohai-yaml compiles its JSON schema once: ~0.15 s), the first read
  of each cloud's settings (pydantic builds each model on first use), EC2's and S3's service models.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil

import vh_orch

SKIP = ("vh_orch.__main__", "vh_orch.migrations", "vh_orch.cloud_drivers.gcp", "vh_orch.storage.gcs")

for module in pkgutil.walk_packages(vh_orch.__path__, "vh_orch."):
    if not module.name.startswith(SKIP):
        importlib.import_module(module.name)


def _warm() -> None:
    from vh_orch.boto import session
    from vh_orch.cloud_drivers.settings import env_settings
    from vh_orch.config.steps import parse_config

    parse_config("- step:\n    name: warm\n    image: busybox\n    command: echo\n", "the fork server's warm-up")
    for cloud in ("local", "fake", "ssh", "aws", "gcp"):
        env_settings(cloud, {})
    for service in ("ec2", "s3"):
        session("us-east-1").client(service, endpoint_url="http://127.0.0.1:9")


try:  # a warm-up that fails leaves the daemons slower, never the fork server broken
    _warm()
except Exception as exc:  # noqa: BLE001
    import sys

    print(f"forkwarm: the warm-up failed ({exc!r}); daemons will do it themselves", file=sys.stderr)

# Last: what the fork server holds is never collected again. A daemon's garbage collections then
# skip (and never write to, so never copy) the fork server's modules: a daemon's start measured
# 0.78 s of CPU without this, 0.42-0.51 s with it (0.54 s with the narrower preload before).
gc.freeze()

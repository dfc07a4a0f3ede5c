"""boto3 sessions that share one botocore data loader per process.

Making a client loads its service's model and the endpoint rules from botocore's JSON files:
~0.3 s of CPU for EC2 on a fresh session, and every new session starts fresh. The loader only
reads those files and caches what it read, so one per process is shared by every session made
here (each environment's driver, each S3 data store); credentials and settings stay per session.
"""

from __future__ import annotations

from functools import cache

import boto3
import botocore.loaders
import botocore.session


@cache
def _loader() -> botocore.loaders.Loader:
    return botocore.loaders.create_loader()


def session(region_name: str | None = None) -> boto3.session.Session:
    """A new boto3 session (its own credentials, region and config) with the shared loader."""
    core = botocore.session.Session()
    core.register_component("data_loader", _loader())
    return boto3.session.Session(botocore_session=core, region_name=region_name)

"""An uploaded package's valohai.yaml: storage/packages.py checks the archive (its members, its
size, the file's size and encoding), and this checks what the file says, so that a package whose
configuration does not load is refused before it is kept."""

from __future__ import annotations

from pathlib import Path

from vh_orch.config.steps import load_config
from vh_orch.config.yaml_limits import MAX_YAML_BYTES
from vh_orch.errors import UserInputError
from vh_orch.storage.packages import DEFAULT_MAX_MEMBERS, Package, PackageError, check_yaml_path, inspect_package


def read_package(path: Path, yaml_path: str, max_unpacked: int, max_members: int = DEFAULT_MAX_MEMBERS) -> Package:
    """The package at `path`, checked (inspect_package) and its configuration file loaded; else a
    PackageError that names the form field at fault."""
    yaml_path = check_yaml_path(yaml_path)
    package = inspect_package(path, yaml_path, max_unpacked, MAX_YAML_BYTES, max_members)
    try:
        load_config(package.config_yaml, yaml_path)
    except UserInputError as exc:
        raise PackageError(str(exc), field="yaml_path") from None
    return package

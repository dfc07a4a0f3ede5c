"""What a cloud can do is declared beside the drivers (cloud_drivers/capabilities.py); nothing else
branches on a cloud's name. Only the drivers and the settings models may spell one in a decision."""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic import BaseModel

import vh_orch
from vh_orch.cloud_drivers.capabilities import CAPABILITIES, capabilities
from vh_orch.cloud_drivers.settings import CLOUD_SETTINGS, SECTIONS, GCPAccelerator, PoolHostSetting, env_settings
from vh_orch.config.environments import CLOUDS, parse_entry

PACKAGE = Path(vh_orch.__file__).parent
ALLOWED = ("cloud_drivers/", "config/environments.py")  # the drivers and the settings models
CLOUD_NAMES = frozenset({"local", "fake", "ssh", "aws", "gcp"})


def _is_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in CLOUD_NAMES


def _names_only(node: ast.AST) -> bool:
    """A tuple, list or set literal of cloud names and nothing else."""
    return (isinstance(node, (ast.Tuple, ast.List, ast.Set)) and bool(node.elts)
            and all(_is_name(e) for e in node.elts))


def _cloud_branches(tree: ast.AST) -> list[int]:
    """The lines that compare something to a cloud name, match on one, or spell a collection of them
    (a tuple, list or set of names, or a table keyed by them)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            if any(_is_name(side) or _names_only(side) for side in (node.left, *node.comparators)):
                lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _is_name(node.value):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and _names_only(node):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and node.keys and all(k is not None and _is_name(k) for k in node.keys):
            lines.append(node.lineno)
    return sorted(set(lines))


def _offenders(root: Path, allowed: tuple[str, ...] = ()) -> dict[str, list[int]]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name.startswith(allowed):
            continue
        lines = _cloud_branches(ast.parse(path.read_text(), name))
        if lines:
            found[name] = lines
    return found


def test_nothing_outside_the_drivers_and_the_settings_models_branches_on_a_cloud_name() -> None:
    assert _offenders(PACKAGE, ALLOWED) == {}, "ask capabilities(cloud) or the typed settings instead"


def test_the_check_sees_every_form_of_branch(tmp_path: Path) -> None:
    forms = [
        'if env.cloud == "local":\n    pass',
        'ok = "ssh" != cloud',
        'remote = env.cloud in ("ssh", "aws", "gcp")',
        'here = cloud not in ["local", "fake"]',
        'VM_CLOUDS = ("aws", "gcp")',
        'KEEP = frozenset({"local"})',
        'match cloud:\n    case "fake":\n        pass',
        'USERS = {"aws": "ubuntu", "gcp": "vh"}',
    ]
    for i, text in enumerate(forms):
        (tmp_path / f"m{i}.py").write_text(text + "\n")
    # A cloud's name as a value is no branch: a default environment's name, a keyword, a dict value, a command.
    (tmp_path / "fine.py").write_text('DEFAULT = "local"\nview(cloud="fake")\nentry = {"cloud": "local"}\n'
                                      'argv = ("ssh", "-o", "BatchMode=yes")\nif section == "runtime":\n    pass\n')
    (tmp_path / "cloud_drivers").mkdir()
    (tmp_path / "cloud_drivers" / "x.py").write_text('if env.cloud == "aws":\n    pass\n')
    found = _offenders(tmp_path, ALLOWED)
    assert sorted(found) == [f"m{i}.py" for i in range(len(forms))]


def test_every_cloud_declares_its_capabilities_and_its_settings_model() -> None:
    assert set(CAPABILITIES) == set(CLOUDS) == CLOUD_NAMES  # a new cloud is declared, and checked for, too
    models = {m.model_fields["cloud"].default: m for m in CLOUD_SETTINGS}
    assert set(models) == set(CLOUDS)
    for cloud in CLOUDS:
        assert type(env_settings(cloud, {})) is models[cloud]
        can = capabilities(cloud)
        assert can.needs_bootstrap == can.reached_over_ssh, cloud  # set up over the SSH it is reached by
        assert not (can.runs_on_this_host and can.reached_over_ssh), cloud
    assert capabilities("local").machine_is_this_host and not capabilities("local").billed


def test_typed_settings_read_a_stored_row_with_the_files_defaults() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk2"
    spec = parse_entry({"name": "pool", "cloud": "ssh", "bootstrap_timeout": "5m", "input_cache_gb": 2,
                        "ssh": {"user": "vh", "private_key_file": "/k",
                                "hosts": [{"address": "127.0.0.1", "port": 2222, "host_key": key}]}}, "e")
    typed = env_settings(spec.cloud, spec.settings)
    assert typed.bootstrap_timeout_s == 300.0 and typed.input_cache_gb == 2.0
    assert typed.launch_timeout_s == 300.0 and typed.pull_policy == "if-missing" and typed.users == "everyone"
    assert typed.zones == ("127.0.0.1:2222",)  # a pool's zones are its hosts
    assert typed.login is not None and typed.login.workdir == "/var/lib/vh-orch"
    # What the file leaves out reads as the same default, and so do a null and an unknown key.
    bare = env_settings("ssh", {"input_cache_gb": None, "from_a_newer_version": 1})
    assert bare.bootstrap_timeout_s == 1200.0 and bare.input_cache_gb == 20.0 and bare.zones == (None,)
    local = parse_entry({"name": "here", "cloud": "local", "users": ["ann", "bo"]}, "e")
    typed_local = env_settings(local.cloud, local.settings)
    assert typed_local.wanted_runtime == "auto" and typed_local.users == ("ann", "bo")
    assert env_settings("local", {"runtime": "process"}).wanted_runtime == "process"


def test_every_setting_says_what_it_is() -> None:
    """The models' field descriptions are the settings' documentation."""
    models: list[type[BaseModel]] = [*CLOUD_SETTINGS, *SECTIONS.values(), PoolHostSetting, GCPAccelerator]
    for model in models:
        undocumented = [name for name, f in model.model_fields.items() if name != "cloud" and not f.description]
        assert undocumented == [], model.__name__

"""Private image registries (issue 30): Debian's `docker-registry` on loopback with htpasswd authentication
holds a copy of the busybox test image; an execution's pull is refused without credentials (and says
"authentication"), works once `vh-orch registry add` stored them, on this host's Docker runtime and on an
SSH machine; the login lives in a folder made for the pull and removed after, never in root's Docker config."""

from __future__ import annotations

import json
import secrets as random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests

from conftest import BUSYBOX, SSHPool, VhOrch, make_project
from quietserver import free_port
from test_ssh_pool import both_hosts, pool_yaml
from test_users import database_bytes, store_of
from vh_orch.bootstrap.registry_login import RegistryAuth, pull_failure, registry_of
from vh_orch.keyring import KeyRing

USER = "pusher"
SECRET = "secret-" + random.token_hex(8)  # a project secret: reaches the container from the client's environment
PASSWORD = "registry-" + random.token_hex(10)


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT

    def image(self, tag: str) -> str:
        return f"{self.host}/team/busybox:{tag}"


def docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=300)


def push(registry: Registry, tag: str) -> str:
    """A private copy of the busybox test image, pushed with a login of its own, then removed from this
    host's engine (so that an execution must pull it)."""
    image = registry.image(tag)
    with tempfile.TemporaryDirectory() as config:
        assert docker("--config", config, "login", "-u", USER, "--password-stdin", registry.host,
                      stdin=PASSWORD).returncode == 0
        assert docker("tag", BUSYBOX, image).returncode == 0
        pushed = docker("--config", config, "push", image)
        assert pushed.returncode == 0, pushed.stderr
    docker("rmi", image)
    assert not present(image)
    return image


def present(image: str) -> bool:
    return docker("image", "inspect", image).returncode == 0


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_images: None) -> Iterator[Registry]:
    server = shutil.which("docker-registry")
    assert server, "Debian's docker-registry is missing: scripts/setup-host.sh installs it"
    root = tmp_path_factory.mktemp("registry")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode().replace("$2b$", "$2y$", 1)
    (root / "htpasswd").write_text(f"{USER}:{hashed}\n")
    port = free_port()
    (root / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"htpasswd": {"realm": "vh-orch-test", "path": str(root / "htpasswd")}},
    }))
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([server, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (root / "registry.log").read_text()
            time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(30)


def root_docker_config_mentions(host: str) -> bool:
    config = Path.home() / ".docker" / "config.json"
    return config.exists() and host in config.read_text()


def login_left_behind(host: str) -> list[Path]:
    """Docker configs in temporary folders that still hold a login for `host` (the pulls' `mktemp -d`)."""
    roots = {Path("/tmp"), Path(tempfile.gettempdir())}
    return [path for root in roots for path in root.glob("tmp.*/config.json") if host in path.read_text()]


STEP = """
- step:
    name: private
    image: IMAGE
    command: echo "ran from the private image; the secret has ${#API_KEY} characters"
"""


def run_private(vh: VhOrch, environment: str | None = None) -> dict:  # type: ignore[type-arg]
    args = ["private", "--project", "p", "--adhoc", str(vh.project_dir)]  # type: ignore[attr-defined]
    created = vh.run_json(*args, *(["--env", environment] if environment else []))
    return vh.wait(created["id"])


def test_image_references_name_their_registry_as_docker_reads_them() -> None:
    assert registry_of("127.0.0.1:5000/team/app:1") == "127.0.0.1:5000"
    assert registry_of("Registry.Example.com/app") == "registry.example.com"
    assert registry_of("localhost/app") == "localhost"
    assert registry_of("python:3.11") is None and registry_of("team/app:1") is None
    auth = RegistryAuth("r.example.com", "u", "hunter2-" + random.token_hex(4))
    assert auth.password not in repr(auth)
    said = "Error response from daemon: Head \"...\": no basic auth credentials"
    assert "authentication" in pull_failure("r.example.com/a", said, None)
    assert "registry add r.example.com" in pull_failure("r.example.com/a", said, None)
    assert "refused the credentials" in pull_failure("r.example.com/a", "unauthorized: incorrect", auth)
    assert "authentication" not in pull_failure("r.example.com/a", "manifest unknown", None)


def test_a_private_image_is_refused_without_credentials_and_pulled_with_them(
        vh: VhOrch, registry: Registry, tmp_path: Path) -> None:
    image = push(registry, "local-" + random.token_hex(4))
    vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "if-missing")
    vh("project", "add", "p")
    vh("project", "secret", "set", "p", "API_KEY", "--value-stdin", stdin=SECRET + "\n")
    vh.project_dir = make_project(tmp_path, "proj", STEP.replace("IMAGE", image))  # type: ignore[attr-defined]
    vh.start_daemon()
    try:
        refused = run_private(vh)
        assert refused["status"] == "error" and "authentication" in refused["status_reason"], refused
        assert not present(image)

        vh("registry", "add", registry.host, "--username", USER, "--password-stdin", stdin="wrong-password\n")
        wrong = run_private(vh)
        assert wrong["status"] == "error" and "refused the credentials" in wrong["status_reason"], wrong

        updated = vh("registry", "add", registry.host, "--username", USER, "--password-stdin", stdin=PASSWORD + "\n")
        assert "updated" in updated.stdout
        pulled = run_private(vh)
        assert pulled["status"] == "complete", pulled
        assert present(image)
        logs = vh("exec", "logs", str(pulled["id"])).stdout
        assert f"ran from the private image; the secret has {len(SECRET)} characters" in logs

        listed = vh.json("registry", "list")
        assert listed == [{"host": registry.host, "environment": None, "username": USER,
                           "created_at": listed[0]["created_at"]}]
        row = store_of(vh).registry_credential(registry.host, store_of(vh).get_environment("local").id)  # type: ignore[arg-type]
        assert row is not None and KeyRing.load(vh.home, {}).decrypt(row.password).decode() == PASSWORD
        assert PASSWORD.encode() not in database_bytes(vh.home)
        assert PASSWORD not in vh.daemon_log.read_text()
        assert not root_docker_config_mentions(registry.host) and not login_left_behind(registry.host)
        vh("registry", "rm", registry.host)
        assert vh.json("registry", "list") == []
    finally:
        docker("rmi", image)


def test_an_ssh_machine_pulls_a_private_image_with_an_environments_credentials(
        vh: VhOrch, registry: Registry, tmp_path: Path, ssh_pool: SSHPool) -> None:
    image = push(registry, "ssh-" + random.token_hex(4))
    doc = json.loads(Path(pool_yaml(ssh_pool, tmp_path, both_hosts(ssh_pool)[:1])).read_text())
    doc["environments"][0]["pull_policy"] = "if-missing"
    (tmp_path / "pool.yaml").write_text(json.dumps(doc))
    vh("env", "apply", str(tmp_path / "pool.yaml"))
    vh("project", "add", "p")
    vh("project", "secret", "set", "p", "API_KEY", "--value-stdin", stdin=SECRET + "\n")
    vh.project_dir = make_project(tmp_path, "proj", STEP.replace("IMAGE", image))  # type: ignore[attr-defined]
    vh.start_daemon()
    try:
        refused = run_private(vh, "onprem")
        assert refused["status"] == "error" and "authentication" in refused["status_reason"], refused
        # Credentials for another environment do not count; the environment's own do.
        vh("registry", "add", registry.host, "--username", USER, "--password-stdin", "--env", "local",
           stdin=PASSWORD + "\n")
        assert run_private(vh, "onprem")["status"] == "error"
        vh("registry", "add", registry.host, "--username", USER, "--password-stdin", "--env", "onprem",
           stdin=PASSWORD + "\n")
        pulled = run_private(vh, "onprem")
        assert pulled["status"] == "complete", pulled
        logs = vh("exec", "logs", str(pulled["id"])).stdout  # the secret went to `sh -s` on stdin, exported
        assert f"ran from the private image; the secret has {len(SECRET)} characters" in logs
        assert present(image)
        assert not root_docker_config_mentions(registry.host) and not login_left_behind(registry.host)
        assert PASSWORD not in vh.daemon_log.read_text()
    finally:
        docker("rmi", image)

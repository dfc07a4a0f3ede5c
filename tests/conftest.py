"""Fixtures: a vh-orch home per test, the CLI and `vh-orch serve` as real subprocesses.

Network safety: the guard in netguard.py fails any non-loopback connection in this
process, and tests/sitecustomize puts the same guard into every Python subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "resolvers"))

import forkserve  # noqa: E402
import inprocess  # noqa: E402
import netguard  # noqa: E402

netguard.install()

# The tests' own boto3 and google-auth calls: fake keys, no metadata probes, no profiles.
for _key in [k for k in os.environ if k.startswith(("AWS_", "GOOGLE_"))]:
    del os.environ[_key]
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
})

EXAMPLE = ROOT / "examples" / "demo"
BUSYBOX = "vh-orch/busybox:test"
PYTHON_IMAGE = "vh-orch/example-python:3.11"
WAIT_S = 60
T = TypeVar("T")
FINAL = ("stopped", "error", "complete")


@pytest.fixture(autouse=True)
def _no_network_violations() -> Iterator[None]:
    netguard.violations.clear()
    yield
    assert not netguard.violations, f"the test tried to reach the network: {netguard.violations}"


def subprocess_env(home: Path) -> dict[str, str]:
    """Environment for vh-orch subprocesses: own home, the network guard, no cloud probes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VH_ORCH_", "AWS_", "GOOGLE_"))}
    env.update(
        {
            "VH_ORCH_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(TESTS / "sitecustomize"), str(TESTS / "resolvers"),
                                           env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            "NO_COLOR": "1",
            "COLUMNS": "200",
            "VH_ORCH_USER": "tester",
            # every test daemon's HTTP API on a free port of its own (read back with `VhOrch.api_url`)
            "VH_ORCH_LISTEN": "127.0.0.1:0",
            # `docker stop -t`: the tests' busybox shells ignore SIGTERM as PID 1, so every stop
            # waited out the default 5 s grace
            "VH_ORCH_STOP_GRACE_S": "2",
        }
    )
    return env


# The suite runs on pytest-xdist workers (pyproject.toml). Everything is per test (homes, cluster
# ids, containers found by label, free ports) or per worker (the sshd hosts: a loopback net of
# their own, sshhosts.free_net) except the chaos world on fixed addresses (127.0.0.10-13, a second
# engine): its tests run on one worker, one after another, so one copy of it is ever up. (xdist's
# own `xdist_group` marks do nothing on pytest 9.2: pytest-xdist#1386.)
SHARED_WORLDS = {
    "test_chaos.py": "chaos-world",
    # one daemon whose tasks are all started at once (the `launched` fixture): one worker, one copy
    "test_tasks.py": "tasks-daemon",
    # one daemon for the module's pipelines (its last test restarts it): one worker, one copy
    "test_pipelines.py": "pipelines-daemon",
    # one daemon for the real `vh` client's pipelines (the `world` fixture): one worker, one copy
    "test_vh_pipelines.py": "vh-pipelines-daemon",
}


# Test files whose daemons serve no HTTP API, for no test of theirs talks to it: building the API
# is about 0.9 s of a daemon start's 2.3 s of CPU, and a run starts some 140 daemons.
NO_HTTP_FILES = frozenset({
    "test_docker_runtime.py", "test_environments.py", "test_gpu_setup.py", "test_input_cache_ssh.py",
    "test_integrity.py", "test_lifecycle.py", "test_limits.py", "test_pipelines.py", "test_pool_hosts.py",
    "test_security_containers.py", "test_security_containers_ssh.py", "test_security_files.py",
    "test_ssh_pool.py", "test_tasks.py", "test_aws_e2e.py",
})


def current_test_file() -> str:
    """The file of the test running now (pytest sets PYTEST_CURRENT_TEST), or ""."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").split("::", 1)[0].rsplit("/", 1)[-1]


# Tiers: a test is `slow` when it needs a world that takes seconds to bring up or drive (the
# Docker engine's images, the sshd hosts, PostgreSQL, the mock clouds, a browser, the chaos or
# replica worlds) or when its file is an end-to-end one; the rest is the quick tier
# (`bash scripts/test.sh --quick`, i.e. `-m "not slow"`), minutes on two cores.
SLOW_FIXTURES = frozenset({"docker_images", "ssh_pool", "postgres", "moto", "gce", "gcs", "browser", "db_url"})
SLOW_FILES = frozenset({"test_chaos.py", "test_replicas.py", "test_vh_client.py", "test_web.py", "test_aws_e2e.py",
                        "test_gcp.py", "test_integrity.py", "test_security_web.py", "test_security_access.py",
                        "test_security_bombs.py", "test_lifecycle.py", "test_docker_runtime.py"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: needs a slow world (engine, sshd, clouds, browser); "
                                       "`-m 'not slow'` runs the quick tier")
    config.addinivalue_line("markers", "screenshots: makes docs/screenshots only; collected when "
                                       "VH_ORCH_SCREENSHOTS=DIR is set")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_FILES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if not os.environ.get("VH_ORCH_SCREENSHOTS"):  # pictures for the README, not a check: left out
        pictures = [item for item in items if item.get_closest_marker("screenshots")]
        if pictures:
            items[:] = [item for item in items if item not in pictures]
            config.hook.pytest_deselected(items=pictures)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    from xdist.scheduler import LoadScopeScheduling

    class SharedWorldScheduling(LoadScopeScheduling):
        """Each test is a unit of its own, but the tests of one shared world are one unit."""

        def _split_scope(self, nodeid: str) -> str:
            return SHARED_WORLDS.get(nodeid.split("::", 1)[0].rsplit("/", 1)[-1], nodeid)

    return SharedWorldScheduling(config, log)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.stdout)


class VhOrch:
    """Runs the real `vh-orch` command against one home folder."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = subprocess_env(home)
        self.exe = str(Path(sys.executable).parent / "vh-orch")
        self.daemon: forkserve.Forked | subprocess.Popen[bytes] | None = None
        self.http = False  # whether the running daemon serves the HTTP API (start_daemon)
        self.daemon_log = home.parent / "serve.log"

    def __call__(self, *args: str, check: bool = True, timeout: float = WAIT_S, cwd: Path | None = None,
                 stdin: str | None = None, subprocess_: bool = False) -> Result:
        """`vh-orch ARGS`: in this process (tests/inprocess.py), or as a real process when it blocks
        (`--follow`, `wait`) or subprocess_ asks for one."""
        if subprocess_ or inprocess.blocks(args):
            proc = subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True,
                                  timeout=timeout, cwd=cwd, input=stdin)
            result = Result(proc.returncode, proc.stdout, proc.stderr)
        else:
            result = Result(*inprocess.run(self.env, args, cwd, stdin))
        if check and result.returncode != 0:
            raise AssertionError(f"vh-orch {' '.join(args)} exited {result.returncode}:\n{result.stderr}\n"
                                 f"{result.stdout}")
        return result

    def json(self, *args: str, **kw):  # type: ignore[no-untyped-def]
        return self(*args, "--json", **kw).json()

    def start_daemon(self, *args: str) -> None:
        """`vh-orch serve` with these options, once it says it started; `--no-http` added for the test
        files that never talk to the API (NO_HTTP_FILES)."""
        assert self.daemon is None
        offset = self.daemon_log.stat().st_size if self.daemon_log.exists() else 0
        self.log_offset = offset
        self.http = "--no-http" not in args and current_test_file() not in NO_HTTP_FILES
        self.daemon = forkserve.serve(self.exe, ["serve", *args, *(() if self.http else ("--no-http",))], self.env,
                                      self.daemon_log)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise AssertionError(f"vh-orch serve exited early:\n{self.daemon_log.read_text()}")
            if "vh-orch daemon started" in self.daemon_log.read_text()[offset:]:
                return
            time.sleep(0.05)
        raise AssertionError("vh-orch serve did not start within the deadline")

    def api_url(self) -> str:
        """The running daemon's HTTP API, from its log line `HTTP API on http://HOST:PORT`."""
        assert self.http, f"this daemon serves no HTTP API: take {current_test_file()} out of NO_HTTP_FILES"
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            since_start = self.daemon_log.read_bytes()[getattr(self, "log_offset", 0):].decode(errors="replace")
            for line in reversed(since_start.splitlines()):
                if "HTTP API on " in line:
                    return line.split("HTTP API on ", 1)[1].split()[0]
            time.sleep(0.05)
        raise AssertionError(f"the daemon logged no HTTP address:\n{self.daemon_log.read_text()}")

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int:
        assert self.daemon is not None
        self.daemon.send_signal(sig)
        try:
            code = self.daemon.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            code = self.daemon.wait(10)
        self.daemon = None
        return code

    def wait(self, execution_id: int, timeout: float = WAIT_S) -> dict:  # type: ignore[type-arg]
        """The execution once it has ended (`exec info --json`), or as it is when the timeout passes."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            info = self.json("exec", "info", str(execution_id))
            if info["status"] in FINAL or time.monotonic() > deadline:
                return info
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)  # two cores: a poll is CPU the daemon under test needs

    def run_json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return self.json("exec", "run", *args)

    def cluster_id(self) -> str | None:
        """This installation's cluster id (every container it starts carries it)."""
        try:
            with sqlite3.connect(self.home / "state.db") as db:
                row = db.execute("SELECT cluster_id FROM installation").fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def containers(self, all_: bool = True) -> list[str]:
        """Names of this installation's containers on this host's engine."""
        out = subprocess.run(["docker", "ps", *(["-a"] if all_ else []), "--filter",
                              f"label=vh-orch.cluster={self.cluster_id()}", "--format", "{{.Names}}"],
                             capture_output=True, text=True, timeout=60).stdout
        return out.split()


def eventually(what: str, probe: Callable[[], T], timeout: float = WAIT_S, interval: float = 0.05) -> T:
    """`probe()` once it is truthy: for what settles just after the state a test waited for (a
    container removed, a pin let go, a machine ready again after its execution ended). On time-out
    the failure names `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {value!r}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


_migrated: Path | None = None


def migrated_sqlite(path: Path) -> str:
    """The URL of a new SQLite database at `path` with every migration applied: a copy of one
    migrated once per test process (the migrations take about a second of CPU each time)."""
    global _migrated
    if _migrated is None:
        import atexit
        import tempfile

        from vh_orch.orchestrator.db import get_engine, upgrade

        made = Path(tempfile.mkdtemp(prefix="vh-orch-migrated-")) / "state.db"
        url = f"sqlite:///{made}"
        upgrade(url)
        get_engine(url).dispose()
        with sqlite3.connect(made) as db:  # everything in the main file: the copy is the whole database
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        atexit.register(shutil.rmtree, made.parent, True)
        _migrated = made
    shutil.copyfile(_migrated, path)
    return f"sqlite:///{path}"


_template: Path | None = None


def copy_initialised_home(home: Path) -> None:
    """What `vh-orch init` makes, copied from one home initialised once per test process (a fresh
    init runs every migration), with a cluster id and a secret key of its own: installations stay
    strangers."""
    global _template
    if _template is None:
        import atexit
        import tempfile

        made = Path(tempfile.mkdtemp(prefix="vh-orch-template-")) / "home"
        VhOrch(made)("init")
        with sqlite3.connect(made / "state.db") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        atexit.register(shutil.rmtree, made.parent, True)
        _template = made
    shutil.copytree(_template, home)
    from cryptography.fernet import Fernet

    (home / "secret.key").write_bytes(Fernet.generate_key() + b"\n")
    db = sqlite3.connect(home / "state.db")
    try:
        with db:
            db.execute("UPDATE installation SET cluster_id = ?", (f"vh-{uuid.uuid4().hex[:16]}",))
    finally:
        db.close()


@contextmanager
def installation(home: Path) -> Iterator[VhOrch]:
    """An initialised vh-orch home; afterwards its daemon is stopped and any container a failure
    left behind is removed: only this installation's (its cluster label), never another's."""
    cli = VhOrch(home)
    copy_initialised_home(home)
    try:
        yield cli
    finally:
        if cli.daemon is not None:
            cli.stop_daemon()
        cluster = cli.cluster_id()
        if shutil.which("docker") and cluster:
            subprocess.run(
                f"docker ps -aq --filter label=vh-orch.cluster={cluster} | xargs -r docker rm -f",
                shell=True,
                capture_output=True,
                timeout=60,
            )


@pytest.fixture
def vh(tmp_path: Path) -> Iterator[VhOrch]:
    with installation(tmp_path / "home") as cli:
        yield cli


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    """The example project as a Git repository of its own."""
    repo = tmp_path / "demo-repo"
    shutil.copytree(EXAMPLE, repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "demo"], check=True)
    return repo


def files_named(root: Path, name: str) -> list[Path]:
    """Every file called `name` under `root`, while the daemon may be removing folders there (os.walk skips those)."""
    return [Path(folder) / name for folder, _, names in os.walk(root) if name in names]


def make_project(tmp_path: Path, name: str, valohai_yaml: str, files: dict[str, str] | None = None) -> Path:
    """A folder with a valohai.yaml (and other files), for --adhoc runs."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "valohai.yaml").write_text(valohai_yaml)
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


@pytest.fixture(scope="session")
def docker_images() -> None:
    """The Docker engine and the locally built images (scripts/build-images.sh) must be there."""
    probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
    assert probe.returncode == 0, "no Docker engine answers: run `bash scripts/test.sh`, which starts one"
    for image in (BUSYBOX, PYTHON_IMAGE):
        found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30)
        assert found.returncode == 0, f"image {image} is missing: run `bash scripts/build-images.sh`"


@dataclass
class SSHPool:
    hosts: list  # list[sshhosts.SSHHost]
    client_key: Path
    client_public: str
    net: int  # the hosts listen on 127.0.NET.2 and .3; other addresses of the net answer nothing

    def spare(self, n: int) -> str:
        """An address of this pool's net where no host listens (or a test starts one of its own)."""
        return f"127.0.{self.net}.{n}"


@pytest.fixture(scope="session")
def ssh_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHPool]:
    """Two sshd hosts on 127.0.NET.2:22 and 127.0.NET.3:22 (a net of this worker's own), started
    once per test session."""
    import sshhosts

    root = tmp_path_factory.mktemp("ssh")
    client_key = root / "client_key"
    public = sshhosts.keygen(client_key, "vh-orch-tests")
    with sshhosts.free_net() as net:
        hosts = [sshhosts.make_host(root, n, net) for n in (2, 3)]
        try:
            for host in hosts:
                host.start(public)
            yield SSHPool(hosts, client_key, public, net)
        finally:
            for host in hosts:
                host.stop()


def pytest_sessionstart(session: pytest.Session) -> None:
    # The sshd hosts stand in for cloud VMs too, whose bootstrap keeps containers from the instance
    # metadata service with a rule in this machine's DOCKER-USER chain: a rule the tests added goes
    # when the whole run ends (the controller's session, after every worker's).
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_HAD_METADATA_RULE] = _metadata_rule("-C")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput") and not session.config.stash.get(_HAD_METADATA_RULE, True):
        _metadata_rule("-D")


_HAD_METADATA_RULE = pytest.StashKey[bool]()


def _metadata_rule(action: str) -> bool:
    from vh_orch.bootstrap.docker_host import METADATA_RULE

    if not shutil.which("iptables"):
        return False
    return subprocess.run(["iptables", action, *METADATA_RULE.split()], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def _moto_session() -> Iterator:  # type: ignore[type-arg]
    import awsfake

    aws = awsfake.MotoAWS()
    aws.start()
    try:
        yield aws
    finally:
        aws.stop()


@pytest.fixture
def moto(_moto_session):  # type: ignore[no-untyped-def]
    """moto's EC2 and S3 on loopback, empty for each test, behind the fault proxy (`moto.proxy`)."""
    _moto_session.reset()
    yield _moto_session
    _moto_session.proxy.clear()


@pytest.fixture(scope="session")
def _gce_session() -> Iterator:  # type: ignore[type-arg]
    import gcpfake

    gce = gcpfake.FakeGCE()
    gce.start()
    try:
        yield gce
    finally:
        gce.stop()


@pytest.fixture
def gce(_gce_session):  # type: ignore[no-untyped-def]
    """A fake Compute Engine REST API on loopback (tests/gcpfake.py), empty and on defaults for each test."""
    _gce_session.reset()
    yield _gce_session
    _gce_session.reset()


@pytest.fixture(scope="session")
def _emulated_gcs() -> Iterator:  # type: ignore[type-arg]
    from gcsfake import EmulatedGCS

    gcs = EmulatedGCS()
    gcs.start()
    try:
        yield gcs
    finally:
        gcs.stop()


@pytest.fixture
def gcs(_emulated_gcs):  # type: ignore[no-untyped-def]
    """gcp-storage-emulator, empty but for the bucket `vh-orch-test`, behind the signature-checking proxy."""
    _emulated_gcs.reset("vh-orch-test")
    return _emulated_gcs


@pytest.fixture(scope="session")
def postgres() -> Iterator:  # type: ignore[type-arg]
    """A real PostgreSQL on a loopback port (tests/pgserver.py), one per worker, for the whole session."""
    import pgserver

    server = pgserver.PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded default and on PostgreSQL (a fresh database each time)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("postgres").new_database()  # type: ignore[no-any-return]
